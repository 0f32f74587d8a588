"""Logits processors: pure functions `logits[R, V] -> logits[R, V]` (removed tokens get -inf).

`process_logits` applies them in ONE fixed order, the order of `PROCESSOR_ORDER`:

    repetition penalty -> presence/frequency penalties -> no-repeat n-gram -> temperature
    -> top-k -> top-p -> typical-p -> min-p -> epsilon -> eta

Every truncation works on the distribution left by the processors before it (softmax of the
current logits, i.e. renormalised over the surviving tokens), as in Hugging Face's warpers.
Every truncation keeps the most probable token, so none of them can empty the distribution, and
ties at a set's boundary are kept (the set is defined by a threshold, not by a sort order).
Only processors switched on in `ProcessorFlags` (static) are compiled in; their knob values are
traced (see `seqgen.decoding.common`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

NEG_INF = -jnp.inf

PROCESSOR_ORDER = (
    "repetition_penalty",
    "presence_frequency_penalty",
    "no_repeat_ngram",
    "temperature",
    "top_k",
    "top_p",
    "typical_p",
    "min_p",
    "epsilon",
    "eta",
)


class ProcessorFlags(NamedTuple):
    """Which processors are compiled in (static). Sizes are static too."""

    penalties: bool = False  # repetition / presence / frequency (needs the [R, V] count buffer)
    no_repeat_ngram_size: int = 0  # needs the [R, max_len] token history buffer
    top_k: int = 0
    top_p: bool = False
    typical_p: bool = False
    min_p: bool = False
    epsilon: bool = False
    eta: bool = False


def flags_from_cfg(get) -> ProcessorFlags:  # noqa: ANN001 - get(name) -> value
    """Switch on exactly the processors whose knob is away from its neutral value."""
    return ProcessorFlags(
        penalties=(
            float(get("repetition_penalty")) != 1.0
            or float(get("presence_penalty")) != 0.0
            or float(get("frequency_penalty")) != 0.0
        ),
        no_repeat_ngram_size=int(get("no_repeat_ngram_size")),
        top_k=int(get("top_k")),
        top_p=float(get("top_p")) < 1.0,
        typical_p=float(get("typical_p")) < 1.0,
        min_p=float(get("min_p")) > 0.0,
        epsilon=float(get("epsilon")) > 0.0,
        eta=float(get("eta")) > 0.0,
    )


def _entropy(logp: jax.Array) -> jax.Array:
    """H = -sum_v p_v log p_v over tokens with p_v > 0.  # [R, 1]"""
    p = jnp.exp(logp)
    return -jnp.sum(jnp.where(p > 0, p * logp, 0.0), axis=-1, keepdims=True)


def _keep_top1(keep: jax.Array, logits: jax.Array) -> jax.Array:
    return keep | (logits >= jnp.max(logits, axis=-1, keepdims=True))


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
    logits unchanged (every truncation keeps the argmax, so the argmax is the same).
    """
    return logits / jnp.where(t > 0, t, 1.0)


def top_k(logits: jax.Array, k: int) -> jax.Array:
    """Top-k (Fan et al. 2018, "Hierarchical neural story generation"): keep the k most probable
    tokens, i.e. every v with x_v >= the k-th largest logit (ties at the boundary kept, so the set
    may exceed k). k = 0 (off) or k >= V keeps everything. k is static.
    """
    if k <= 0 or k >= logits.shape[-1]:
        return logits
    kth = jax.lax.top_k(logits, k)[0][..., -1:]  # [R, 1]
    return jnp.where(logits >= kth, logits, NEG_INF)


def _prefix_threshold(sorted_probs: jax.Array, mass: jax.Array) -> jax.Array:
    """Index mask of the smallest prefix of `sorted_probs` whose total is >= mass.

    Rank i is kept iff the mass strictly before it is < mass.  # [R, S]
    """
    before = jnp.concatenate(
        [jnp.zeros_like(sorted_probs[..., :1]), jnp.cumsum(sorted_probs, axis=-1)[..., :-1]],
        axis=-1,
    )
    return before < mass


# Up to this vocabulary size the nucleus and typical sets are found without a sort, from
# pairwise comparisons (O(V^2) work per row, vectorised); above it, with one sort per row.
PAIRWISE_MAX_VOCAB = 256


def _mass_before(probs: jax.Array, ahead: jax.Array) -> jax.Array:
    """For each token v: the total probability of the tokens u that come strictly before v,
    ahead[..., v, u] = True when u comes before v.  # [R, V]"""
    return jnp.sum(jnp.where(ahead, probs[..., None, :], 0.0), axis=-1)


def top_p(logits: jax.Array, p: jax.Array, sorted_logits: jax.Array | None = None) -> jax.Array:
    """Nucleus / top-p (Holtzman et al. 2020, "The curious case of neural text degeneration",
    sec. 3.1, eq. 2): keep the smallest set V^(p) with sum_{v in V^(p)} P(v) >= p.

    With P sorted in decreasing order, rank i is in the set iff sum_{j<i} P_j < p; then every token
    with P_v >= the smallest kept probability is kept (ties at the boundary kept). Equivalently,
    v is kept iff sum_{u : P_u > P_v} P_u < p, which is how it is computed (no sort) for
    V <= PAIRWISE_MAX_VOCAB.
    `sorted_logits` ([R, S], S <= V, decreasing) may carry the already-sorted top of `logits`
    (after top-k), so no second full-vocabulary sort is needed; it must contain every token
    that can be kept.
    """
    logz = jax.nn.logsumexp(logits, axis=-1, keepdims=True)
    if logits.shape[-1] <= PAIRWISE_MAX_VOCAB:
        # v is kept iff the mass of the strictly more probable tokens is < p: the same set
        # (ties included) as the sorted prefix below, without a sort
        probs = jnp.exp(logits - logz)  # [R, V]
        before = _mass_before(probs, logits[..., None, :] > logits[..., :, None])
        return jnp.where(before < p, logits, NEG_INF)
    if sorted_logits is None:
        sorted_logits = -jnp.sort(-logits, axis=-1)
    sorted_probs = jnp.exp(sorted_logits - logz)  # [R, S]
    keep_sorted = _prefix_threshold(sorted_probs, p)
    thr = jnp.min(jnp.where(keep_sorted, sorted_logits, jnp.inf), axis=-1, keepdims=True)
    return jnp.where(logits >= thr, logits, NEG_INF)


def typical_p(logits: jax.Array, mass: jax.Array) -> jax.Array:
    """Locally typical sampling (Meister et al. 2023, "Locally typical sampling", TACL, eq. 7-9).

    With H = -sum_v P(v) log P(v), sort tokens by |-log P(v) - H| (increasing) and keep the
    smallest prefix whose probability mass is >= `mass` (tau); every token whose deviation is <=
    the largest kept deviation is kept (ties kept). Tokens with P = 0 are never kept.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    dev = jnp.where(jnp.isfinite(logp), jnp.abs(-logp - _entropy(logp)), jnp.inf)  # [R, V]
    if logits.shape[-1] <= PAIRWISE_MAX_VOCAB:
        before = _mass_before(jnp.exp(logp), dev[..., None, :] < dev[..., :, None])
        return jnp.where((before < mass) & jnp.isfinite(dev), logits, NEG_INF)
    sorted_dev, sorted_probs = jax.lax.sort((dev, jnp.exp(logp)), dimension=-1, num_keys=1)
    keep_sorted = _prefix_threshold(sorted_probs, mass) & jnp.isfinite(sorted_dev)
    thr = jnp.max(jnp.where(keep_sorted, sorted_dev, -jnp.inf), axis=-1, keepdims=True)
    return jnp.where(dev <= thr, logits, NEG_INF)


def min_p(logits: jax.Array, p_base: jax.Array) -> jax.Array:
    """Min-p (Nguyen et al. 2024, "Turning up the heat: min-p sampling"): keep v iff
    P(v) >= p_base * max_u P(u), i.e. x_v >= max_u x_u + log p_base.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    keep = probs >= p_base * jnp.max(probs, axis=-1, keepdims=True)
    return jnp.where(_keep_top1(keep, logits), logits, NEG_INF)


def epsilon(logits: jax.Array, eps: jax.Array) -> jax.Array:
    """Epsilon sampling (Hewitt et al. 2022, "Truncation sampling as language model desmoothing",
    sec. 4): keep {v : P(v) > eps}; the most probable token is always kept.
    """
    probs = jax.nn.softmax(logits, axis=-1)
    return jnp.where(_keep_top1(probs > eps, logits), logits, NEG_INF)


def eta(logits: jax.Array, eta_: jax.Array) -> jax.Array:
    """Eta sampling (Hewitt et al. 2022, sec. 5): keep {v : P(v) > eta'} with the entropy-dependent
    threshold eta' = min(eta, sqrt(eta) * exp(-H(P))); the most probable token is always kept.
    """
    logp = jax.nn.log_softmax(logits, axis=-1)
    thr = jnp.minimum(eta_, jnp.sqrt(eta_) * jnp.exp(-_entropy(logp)))
    return jnp.where(_keep_top1(jnp.exp(logp) > thr, logits), logits, NEG_INF)


def penalize(
    logits: jax.Array,
    knobs: dict[str, jax.Array],
    flags: ProcessorFlags,
    counts: jax.Array | None,
    history: jax.Array | None,
    t: jax.Array,
) -> jax.Array:
    """The first three processors (penalties and n-gram blocking); greedy applies only these."""
    if flags.penalties:
        logits = repetition_penalty(logits, counts, knobs["repetition_penalty"])
        logits = presence_frequency_penalty(
            logits, counts, knobs["presence_penalty"], knobs["frequency_penalty"]
        )
    if flags.no_repeat_ngram_size > 0:
        logits = no_repeat_ngram(logits, history, t, flags.no_repeat_ngram_size)
    return logits


def truncate(logits: jax.Array, knobs: dict[str, jax.Array], flags: ProcessorFlags) -> jax.Array:
    """Temperature then the truncations, in PROCESSOR_ORDER."""
    logits = temperature(logits, knobs["temperature"])
    sorted_top = None
    if 0 < flags.top_k < logits.shape[-1]:
        sorted_top = jax.lax.top_k(logits, flags.top_k)[0]  # one partial sort  # [R, k]
        logits = jnp.where(logits >= sorted_top[..., -1:], logits, NEG_INF)
    if flags.top_p:
        logits = top_p(logits, knobs["top_p"], sorted_top)
    if flags.typical_p:
        logits = typical_p(logits, knobs["typical_p"])
    if flags.min_p:
        logits = min_p(logits, knobs["min_p"])
    if flags.epsilon:
        logits = epsilon(logits, knobs["epsilon"])
    if flags.eta:
        logits = eta(logits, knobs["eta"])
    return logits


def process_logits(
    logits: jax.Array,
    knobs: dict[str, jax.Array],
    flags: ProcessorFlags,
    counts: jax.Array | None = None,
    history: jax.Array | None = None,
    t: jax.Array | int = 0,
) -> jax.Array:
    """All processors in PROCESSOR_ORDER. logits [R, V] -> processed logits [R, V]."""
    return truncate(penalize(logits, knobs, flags, counts, history, t), knobs, flags)
