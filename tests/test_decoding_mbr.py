"""decoder=mbr: one candidate is returned as is; the choice and expected utilities equal a
brute-force double loop over (hypothesis, reference) pairs."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import decode
from seqgen.errors import UserError
from seqgen.metrics.utility import UTILITY_FUNCTIONS
from tests.helpers_decoding import markov_step, markov_table

V, T = 8, 8
TABLE = jnp.asarray(markov_table(V, 5, scale=1.0))
PROMPTS = np.array([[4, 5], [6, 0]], np.int32)
PLEN = np.array([2, 1], np.int32)


def run(cfg: dict, key=7, num_samples: int = 1):
    out = decode(
        markov_step,
        TABLE,
        jnp.zeros(2),
        PROMPTS,
        PLEN,
        cfg=cfg,
        max_len=T,
        vocab_size=V,
        key=key,
        num_samples=num_samples,
    )
    return jax.tree.map(np.asarray, out)


def conts(out, b: int) -> list[list[int]]:
    n = out.tokens.shape[1]
    return [out.tokens[b, i, PLEN[b] : out.lengths[b, i]].tolist() for i in range(n)]


def test_one_candidate_is_returned():
    out = run({"name": "mbr", "num_candidates": 1, "num_references": 4})
    key = jax.random.fold_in(jax.random.key(7), 0)
    alone = run({"name": "sample"}, key=key)
    np.testing.assert_array_equal(out.tokens, alone.tokens)
    np.testing.assert_array_equal(out.logprobs, alone.logprobs)


@pytest.mark.slow
@pytest.mark.parametrize("utility", ["chrf", "bleu", "edit"])
def test_mbr_equals_brute_force_double_loop(utility):
    cfg = {"name": "mbr", "num_candidates": 6, "num_references": 5, "utility": utility}
    out = run(cfg)
    ref_key = jax.random.fold_in(jax.random.key(7), 1)
    refs = run({"name": "sample"}, key=ref_key, num_samples=5)
    u = UTILITY_FUNCTIONS[utility]
    for b in range(2):
        hyps, rs = conts(out, b), conts(refs, b)
        brute = [np.mean([u([h], [r])[0, 0] for r in rs]) for h in hyps]
        np.testing.assert_allclose(out.scores[b], brute, atol=1e-6)  # float32 scores
        assert np.all(np.diff(out.scores[b]) <= 0)  # best first
        assert brute[0] == pytest.approx(max(brute), abs=1e-6)


def test_candidates_equal_references_brute_force():
    # deterministic beams as both sets, so candidates == references and u(h, h) = 1 is part of
    # each mean; the double loop uses an independent Levenshtein (tests/test_metrics_utility)
    from tests.test_metrics_utility import levenshtein

    beams = {"name": "beam", "beam_size": 4}
    out = run({"name": "mbr", "candidates": beams, "references": beams, "utility": "edit"})
    direct = run(beams)
    for b in range(2):
        hyps = conts(direct, b)
        assert len({tuple(h) for h in hyps}) == 4  # distinct beams: a real choice
        eu = []
        for h in hyps:
            total = 0.0
            for r in hyps:
                m = max(len(h), len(r))
                total += 1.0 if m == 0 else 1 - levenshtein(h, r) / m
            eu.append(total / len(hyps))
        assert conts(out, b)[0] == hyps[int(np.argmax(eu))]
        np.testing.assert_allclose(out.scores[b], sorted(eu, reverse=True), atol=1e-6)


def test_mbr_config_errors():
    with pytest.raises(UserError, match="candidates.top_pp"):
        run({"name": "mbr", "candidates": {"top_pp": 0.9}})
    with pytest.raises(UserError, match="references.name"):
        run({"name": "mbr", "references": {"name": "exact"}})
    with pytest.raises(UserError, match="utility"):
        run({"name": "mbr", "utility": "meteor"})
