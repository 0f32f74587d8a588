"""The logits processors (`decoding/processors.py`): min-length in every decoder, truncation
sets by hand, penalties, top-p / typical-p against the sorted-prefix definition."""

from __future__ import annotations

from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import (
    DecodeRequest,
    beam,
    greedy,
    run,
    sample,
)
from seqgen.decoding.common import DEFAULTS
from seqgen.tokens import EOS_ID, PAD_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    brute_force_logprob,
    log_softmax64,
    markov_step,
    markov_table,
    to_numpy,
)

# ----- min_length: no EOS before it, for every decoder -----


@pytest.mark.slow
def test_min_length_for_every_decoder():
    """EOS is the most probable token from every state, so without min_length every decoder
    would stop at once; with min_length = 3 none ends before 3 continuation tokens, greedy
    ends at exactly 3, and the sampled distributions are renormalized over the other tokens
    while EOS is forbidden (the model's own log-probs are reported unchanged)."""
    v, m = 9, 3
    table = markov_table(v, 6)
    table[:, EOS_ID] = table.max(axis=1) + 1.0
    lp = log_softmax64(table)
    params, kw = jnp.asarray(table), dict(max_len=10, vocab_size=v, key=2)
    cfgs = {
        "greedy": NS(min_length=m),
        "sample": NS(min_length=m),
        "beam": NS(min_length=m, beam_size=3),
        "stochastic_beam": NS(min_length=m, beam_size=3),
        "diverse_beam": NS(min_length=m, beam_size=4, num_groups=2, diversity_penalty=0.5),
    }
    for name, cfg in cfgs.items():
        out = run(
            name,
            DecodeRequest(
                markov_step,
                params,
                jnp.zeros(3),
                PROMPTS,
                PROMPT_LENGTHS,
                cfg=cfg,
                num_samples=20,
                **kw,
            ),
        )
        out = to_numpy(out)
        gen = out.lengths - PROMPT_LENGTHS[:, None]  # continuation tokens, EOS excluded
        real = np.isfinite(out.scores)
        assert out.ended.any(), name
        assert np.all(gen[out.ended] >= m), name
        if name in ("greedy", "sample"):
            assert np.all(out.ended) and np.any(gen == m), name
        if name == "greedy":
            np.testing.assert_array_equal(gen, m)
        for i, j in zip(*np.nonzero(real)):  # model log-probs: unchanged by the EOS mask
            plen = PROMPT_LENGTHS[i]
            seq = out.tokens[i, j, plen : out.lengths[i, j]].tolist()
            prompt = PROMPTS[i, :plen].tolist()
            want = brute_force_logprob(lp, prompt, seq, out.ended[i, j])
            np.testing.assert_allclose(
                out.logprobs[i, j].sum() + out.eos_logprob[i, j], want, rtol=1e-5
            )
            if name in ("sample", "stochastic_beam"):  # sampled from the renormalized steps
                prev, total = (prompt[-1] if prompt else 1), 0.0
                for n, tok in enumerate(seq):
                    total += lp[prev, tok] - (np.log1p(-np.exp(lp[prev, EOS_ID])) if n < m else 0)
                    prev = tok
                total += lp[prev, EOS_ID] if out.ended[i, j] else 0.0
                got = out.processed_logprobs[i, j].sum() + out.eos_processed_logprob[i, j]
                np.testing.assert_allclose(got, total, rtol=1e-5)
    # without min_length the best beam is the empty continuation (EOS is the argmax everywhere)
    out = beam(
        DecodeRequest(
            markov_step, params, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(beam_size=3), **kw
        )
    )
    assert np.all(out.lengths[:, 0] == PROMPT_LENGTHS) and out.ended[:, 0].all()


# p over tokens [EOS, 4, 5, 6, 7, 8, 9] with a tie (0.2, 0.2)
P_FIXED = {2: 0.05, 4: 0.3, 5: 0.2, 6: 0.2, 7: 0.15, 8: 0.07, 9: 0.03}


def fixed_logits() -> np.ndarray:
    x = np.full(10, -1e9, np.float32)
    for tok, p in P_FIXED.items():
        x[tok] = np.log(p)
    return x


def typical_set(p: dict, mass: float) -> set:
    """Meister et al. 2023 by hand: sort by |-log p - H|, smallest prefix with mass >= tau."""
    h = -sum(q * np.log(q) for q in p.values())
    order = sorted(p, key=lambda t: abs(-np.log(p[t]) - h))
    kept, total = [], 0.0
    for t in order:
        if total >= mass:
            break
        kept.append(t)
        total += p[t]
    bound = max(abs(-np.log(p[t]) - h) for t in kept)
    return {t for t in p if abs(-np.log(p[t]) - h) <= bound + 1e-12}


def eta_set(p: dict, eta: float) -> set:
    h = -sum(q * np.log(q) for q in p.values())
    thr = min(eta, np.sqrt(eta) * np.exp(-h))
    assert all(abs(q - thr) > 1e-3 for q in p.values())
    return {t for t in p if p[t] > thr} | {max(p, key=p.get)}


TRUNCATION_CASES = [
    ({"top_k": 1}, {4}),
    ({"top_k": 2}, {4, 5, 6}),  # tie at the k-th value kept
    ({"top_k": 4}, {4, 5, 6, 7}),
    ({"top_p": 0.25}, {4}),
    ({"top_p": 0.45}, {4, 5, 6}),  # {4, 5} reaches 0.5 >= 0.45; 6 ties with 5
    ({"top_p": 0.75}, {4, 5, 6, 7}),
    ({"typical_p": 0.3}, typical_set(P_FIXED, 0.3)),
    ({"typical_p": 0.9}, typical_set(P_FIXED, 0.9)),
    ({"min_p": 0.6}, {4, 5, 6}),  # p >= 0.18
    ({"min_p": 0.2}, {4, 5, 6, 7, 8}),  # p >= 0.06
    ({"epsilon": 0.06}, {4, 5, 6, 7, 8}),
    ({"epsilon": 0.5}, {4}),  # nothing above: the argmax is kept
    ({"eta": 0.1}, eta_set(P_FIXED, 0.1)),
    ({"eta": 0.01}, eta_set(P_FIXED, 0.01)),
    # top-p on the renormalized top-4 (0.35, 0.24, 0.24, 0.18): {4, 5, 6} reaches 0.82 >= 0.8;
    # on the unrenormalized p it would also keep 7
    ({"top_k": 4, "top_p": 0.8}, {4, 5, 6}),
    # min_tokens_to_keep (Hugging Face): at least m tokens, the most probable ones (ties at the
    # m-th kept), except typical-p, which keeps the m least deviating ones
    ({"top_k": 1, "min_tokens_to_keep": 3}, {4, 5, 6}),
    ({"top_p": 0.25, "min_tokens_to_keep": 2}, {4, 5, 6}),  # 6 ties with the 2nd
    ({"typical_p": 0.3, "min_tokens_to_keep": 3}, {5, 6, 7}),  # not the argmax 4
    ({"typical_p": 0.3, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),
    ({"min_p": 0.9, "min_tokens_to_keep": 3}, {4, 5, 6}),
    ({"epsilon": 0.5, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),
    ({"eta": 0.9, "min_tokens_to_keep": 4}, {4, 5, 6, 7}),  # eta alone: p > 0.168, {4, 5, 6}
]


def _first_of_each_kind(cases: list[tuple]) -> list:
    """The cases, those after the first with the same knobs (other values) marked slow: the fast
    subset keeps one case of each processor and combination."""
    seen: set[frozenset] = set()
    out = []
    for knobs, allowed in cases:
        kind = frozenset(knobs)
        out.append(pytest.param(knobs, allowed, marks=[pytest.mark.slow] * (kind in seen)))
        seen.add(kind)
    return out


@pytest.mark.parametrize(("knobs", "allowed"), _first_of_each_kind(TRUNCATION_CASES))
def test_truncation_sets(knobs, allowed):
    from seqgen.decoding import processor_table as table

    # hand check of the reference: H = 1.7307; deviations 5, 6: 0.121, 7: 0.166, 4: 0.527, so
    # typical-p drops the most probable token 4
    assert typical_set(P_FIXED, 0.3) == {5, 6}
    assert eta_set(P_FIXED, 0.9) == {4, 5, 6}
    assert typical_set(P_FIXED, 0.9) == {4, 5, 6, 7, 8}
    x = fixed_logits()
    flags = table.flags_from_cfg(lambda k: knobs.get(k, DEFAULTS[k]))
    knob_arrays = {k: jnp.float32(v) for k, v in {**proc_defaults(), **knobs}.items()}
    out = np.asarray(table.process_logits(jnp.asarray(x)[None], knob_arrays, flags))[0]
    kept = {int(t) for t in np.flatnonzero(np.isfinite(out))}
    assert kept == allowed
    np.testing.assert_array_equal(out[sorted(kept)], x[sorted(kept)])
    # sampling never leaves the set and (2000 draws) visits all of it
    params = jnp.asarray(np.tile(x, (10, 1)))
    res = sample(
        DecodeRequest(
            markov_step,
            params,
            jnp.zeros(1),
            max_len=1,
            vocab_size=10,
            key=0,
            num_samples=2000,
            cfg=NS(**knobs),
        )
    )
    emitted = set(res.tokens[0, :, 0].tolist()) - {PAD_ID}
    emitted |= {EOS_ID} if res.ended.any() else set()
    assert emitted == allowed


def proc_defaults() -> dict:
    from seqgen.decoding.common import DEFAULTS
    from seqgen.decoding.knobs import traced_names

    static = ("top_k", "no_repeat_ngram_size", "min_tokens_to_keep")
    return {k: DEFAULTS[k] for k in (*traced_names(), *static)}


# ----- penalties -----


@pytest.mark.slow
def test_no_repeat_ngram_and_penalties():
    from seqgen.decoding import processors as proc

    table = np.full((8, 8), -1e9, np.float32)
    table[:, 4:] = np.log([0.7, 0.1, 0.1, 0.1])  # loves token 4
    table[:, EOS_ID] = np.log(1e-6)
    out = sample(
        DecodeRequest(
            markov_step,
            jnp.asarray(table),
            jnp.zeros(1),
            max_len=12,
            vocab_size=8,
            key=1,
            num_samples=50,
            cfg=NS(no_repeat_ngram_size=2),
        )
    )
    out = to_numpy(out)
    for i in range(50):
        seq = out.tokens[0, i, : out.lengths[0, i]].tolist()
        grams = list(zip(seq, seq[1:]))
        assert len(grams) == len(set(grams))
        assert len(seq) >= 5  # it never stops early: EOS has probability 1e-6
    # hand-computed penalties
    x = jnp.asarray([[2.0, -1.0, 0.5, 3.0]])
    counts = jnp.asarray([[1, 2, 0, 0]])
    np.testing.assert_allclose(
        proc.repetition_penalty(x, counts, jnp.float32(2.0)), [[1.0, -2.0, 0.5, 3.0]]
    )
    np.testing.assert_allclose(
        proc.presence_frequency_penalty(x, counts, jnp.float32(0.5), jnp.float32(0.25)),
        [[1.25, -2.0, 0.5, 3.0]],
    )
    hist = jnp.asarray([[5, 6, 5, 7, 5, 0, 0]])  # at t=5 the last token is 5: ban 6 and 7
    banned = proc.no_repeat_ngram(jnp.zeros((1, 8)), hist, jnp.int32(5), 2)
    assert set(np.flatnonzero(~np.isfinite(banned[0])).tolist()) == {6, 7}
    banned3 = proc.no_repeat_ngram(jnp.zeros((1, 8)), hist, jnp.int32(5), 3)  # (7, 5) -> none
    assert np.isfinite(banned3).all()
    # the repetition penalty with a huge theta makes greedy avoid every token it has produced
    g = greedy(
        DecodeRequest(
            markov_step,
            jnp.asarray(table),
            jnp.zeros(1),
            max_len=4,
            vocab_size=8,
            cfg=NS(repetition_penalty=1e6),
        )
    )
    assert sorted(g.tokens[0, 0].tolist()) == [4, 5, 6, 7]


@pytest.mark.slow  # several compiles: the full suite runs it
def test_top_p_and_typical_match_the_sorted_prefix_definition():
    """`keep_by_mass` (every method: 2-ary and 16-ary search, sort) keeps exactly the
    sorted-prefix sets, ties included."""
    from seqgen.decoding import processors as proc

    rng = np.random.default_rng(0)
    x = rng.integers(-4, 4, size=(64, 40)).astype(np.float32)  # many ties
    x[:, :3] = -np.inf
    lp = log_softmax64(np.where(np.isfinite(x), x, -1e30))
    p = np.exp(lp)
    h = -(p * lp).sum(-1, keepdims=True)
    dev = np.where(np.isfinite(x), np.abs(-lp - h), np.inf)

    def prefix_set(order_key: np.ndarray, mass: float) -> np.ndarray:  # larger key = first
        keep = np.zeros_like(order_key, bool)
        for r in range(len(order_key)):
            order = np.argsort(-order_key[r], kind="stable")
            before = np.concatenate([[0.0], np.cumsum(p[r, order])[:-1]])
            bound = order_key[r, order][before < mass].min()
            keep[r] = order_key[r] >= bound
        return keep

    for method in proc.NUCLEUS_METHODS:
        for mass in (0.1, 0.5, 0.77, 0.95):
            m = jnp.float32(mass)
            got_p = np.isfinite(np.asarray(proc.top_p(jnp.asarray(x), m, method=method)))
            np.testing.assert_array_equal(got_p, prefix_set(x, mass) & np.isfinite(x), method)
            got_t = np.isfinite(np.asarray(proc.typical_p(jnp.asarray(x), m, method=method)))
            np.testing.assert_array_equal(got_t, prefix_set(-dev, mass) & np.isfinite(x), method)


def test_nucleus_methods_give_the_same_sets():
    """top-p's ways to find its set (2-ary and 16-ary search over the keys' bit patterns, one
    sort per row) keep the same tokens, on continuous logits and on logits with many ties."""
    from seqgen.decoding import processors as proc

    rng = np.random.default_rng(1)
    cont = rng.normal(size=(128, 50)).astype(np.float32) * 3.0
    ties = rng.integers(-3, 3, size=(128, 50)).astype(np.float32)
    ties[:, :3] = -np.inf
    for x in (cont, ties):
        x = jnp.asarray(x)
        for mass in (0.05, 0.3, 0.5, 0.9, 0.99):
            m = jnp.float32(mass)
            a = np.asarray(proc.top_p(x, m, method="bisect"))
            for other in set(proc.NUCLEUS_METHODS) - {"bisect"}:
                b = np.asarray(proc.top_p(x, m, method=other))
                np.testing.assert_array_equal(np.isfinite(a), np.isfinite(b), other)
            assert 0 < np.isfinite(a).sum() < np.isfinite(np.asarray(x)).sum()
