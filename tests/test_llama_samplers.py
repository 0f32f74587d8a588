"""llama.cpp's DRY, XTC, dynamic temperature and penalty window on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.decoding import llama_samplers as L

A, B, C, Y = 4, 5, 6, 7  # llama.cpp's DRY comment example: "a b c c b c y a b c"
CONTEXT = [A, B, C, C, B, C, Y, A, B, C]


def _dry(breakers=(), allowed=2, t=10):
    # positions >= t hold junk that must not count
    history = jnp.asarray([CONTEXT + [C, C]], jnp.int32)
    return np.asarray(L.dry(jnp.zeros((1, 8)), history, t, 0.8, 1.75, allowed, breakers))[0]


def test_dry_llama_cpp_example():
    # repeat counts (llama.cpp): 0 0 3 1 0 2 0 0 0 0 -> next tokens c: 3, b: 1, y: 2;
    # allowed_length 2: c gets 0.8 * 1.75 ** (3 - 2) = 1.4, y gets 0.8 * 1.75 ** 0 = 0.8
    want = np.zeros(8)
    want[C], want[Y] = -1.4, -0.8
    np.testing.assert_allclose(_dry(), want, rtol=1e-6)


def test_dry_breakers():
    # y a single-token breaker: never penalised itself; the context after the last y is
    # "a b c" (3 tokens), so c's repeat of 3 still counts
    want = np.zeros(8)
    want[C] = -1.4
    np.testing.assert_allclose(_dry(breakers=(Y,)), want, rtol=1e-6)
    # a as breaker: only "b c" follows the last a, so repeats are capped at 2: c and y get 0.8
    want[C], want[Y] = -0.8, -0.8
    np.testing.assert_allclose(_dry(breakers=(A,)), want, rtol=1e-6)
    # the last token a breaker: no repeat can be extended
    np.testing.assert_allclose(_dry(breakers=(C,)), np.zeros(8))


def test_dry_allowed_length_and_prefix():
    # allowed_length 1: b (repeat 1) now counts too: 0.8 * 1.75 ** 0
    want = np.zeros(8)
    want[C], want[Y], want[B] = -0.8 * 1.75**2, -1.4, -0.8
    np.testing.assert_allclose(_dry(allowed=1), want, rtol=1e-6)
    # context "a b c c b c y" (t = 7, ends in y): y occurred only here, nothing repeats
    np.testing.assert_allclose(_dry(t=7, allowed=1), np.zeros(8))


def _xtc(logits, threshold, probability, rows=1, min_keep=1):
    keys = jax.random.split(jax.random.key(0), rows)
    x = jnp.broadcast_to(jnp.log(jnp.asarray(logits)), (rows, len(logits)))
    return np.asarray(L.xtc(x, keys, threshold, probability, min_keep))


def test_xtc_removes_top_choices_but_the_least():
    p = [0.4, 0.3, 0.2, 0.1]
    out = _xtc(p, 0.25, 1.0)[0]  # 0.4 and 0.3 reach 0.25: 0.4 goes, 0.3 stays
    assert out[0] == -np.inf
    np.testing.assert_allclose(out[1:], np.log(p[1:]), rtol=1e-6)
    np.testing.assert_array_equal(_xtc(p, 0.35, 1.0)[0], np.log(np.float32(p)))  # one above
    np.testing.assert_array_equal(_xtc(p, 0.25, 1.0, min_keep=4)[0], np.log(np.float32(p)))
    np.testing.assert_array_equal(_xtc(p, 0.6, 1.0)[0], np.log(np.float32(p)))  # > 0.5: off


def test_xtc_fires_with_its_probability():
    rows, prob = 4000, 0.3
    fired = np.isinf(_xtc([0.4, 0.3, 0.2, 0.1], 0.25, prob, rows=rows)[:, 0]).mean()
    sd = np.sqrt(prob * (1 - prob) / rows)
    assert abs(fired - prob) < 4 * sd, fired


def test_dynatemp_hand_computed():
    # p = (1/2, 1/4, 1/4) and a removed token: H = 1.5 ln 2, H_max = ln 3, H / H_max = 0.946395
    x = jnp.log(jnp.asarray([[0.5, 0.25, 0.25, 0.0]]))
    for exponent, t_dyn in ((1.0, 0.5 + 1.0 * 0.946395), (2.0, 0.5 + 1.0 * 0.946395**2)):
        out = np.asarray(L.dynatemp(x, 1.0, 0.5, exponent))[0]
        np.testing.assert_allclose(out[:3], np.log([0.5, 0.25, 0.25]) / t_dyn, rtol=1e-5)
        assert out[3] == -np.inf
    # t = 2, range 0: T_dyn = t, so the factor t / T_dyn is 1
    np.testing.assert_allclose(L.dynatemp(x, 2.0, 0.0, 1.0), x, rtol=1e-6)


def test_window_counts():
    history = jnp.asarray([[5, 6, 5, 7, 6, 0, 0]], jnp.int32)
    got = np.asarray(L.window_counts(history, 5, jnp.asarray([0]), 3, 8))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 0, 1, 1, 1])  # positions 2..4: 5 7 6
    got = np.asarray(L.window_counts(history, 5, jnp.asarray([3]), 3, 8))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 0, 0, 1, 1])  # prompt 0..2 not counted
    got = np.asarray(L.window_counts(history, 5, jnp.asarray([0]), 7, 8))[0]
    np.testing.assert_array_equal(got, [0, 0, 0, 0, 0, 2, 2, 1])
