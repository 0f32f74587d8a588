"""llama.cpp's DRY, XTC, dynamic temperature and penalty window on hand-computed cases."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from helpers_decoding import markov_step

from seqgen.decoding import decode
from seqgen.decoding import llama_samplers as L
from seqgen.decoding import processor_table as table
from seqgen.decoding import processors as P
from seqgen.decoding.registry import validate_decoder
from seqgen.errors import UserError

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


# --- through the decoders: the table's rows and `decoder.order` ---------------------------------

V = 8  # 4 specials, tokens 4..7


def _table(rows: dict[int, dict[int, float]]) -> jnp.ndarray:
    t = np.full((V, V), -1e9, np.float32)
    for prev, nxt in rows.items():
        for tok, logit in nxt.items():
            t[prev, tok] = logit
    return jnp.asarray(t)


def _dry_ref(context, logits, mult, base, allowed):
    """DRY as llama.cpp's comments define it, by brute force over the context."""
    out = np.array(logits, np.float64)
    longest = {}
    for j in range(len(context) - 1):  # a repeat ending at j, extended by context[j + 1]
        n = 0
        while n <= j and context[j - n] == context[len(context) - 1 - n]:
            n += 1
        if n >= allowed:
            longest[context[j + 1]] = max(longest.get(context[j + 1], -1), n)
    for tok, n in longest.items():
        out[tok] -= mult * base ** (n - allowed)
    return out


def test_greedy_with_dry_and_a_penalty_window_replays_the_definitions():
    # a Markov chain whose greedy path is 4 5 4 5 ...; 6 and 7 are the runners-up
    table = _table({4: {5: 2.0, 6: 1.0}, 5: {4: 2.0, 6: 1.2}, 6: {4: 2.0, 7: 1.5}, 7: {5: 2.0}})
    cfg = dict(
        name="greedy", dry_multiplier=1.5, dry_base=2.0, dry_allowed_length=2,
        repetition_penalty=1.3, penalty_last_n=3,
    )  # fmt: skip
    prompts, steps = np.array([[4]], np.int32), 24
    out = decode(markov_step, table, jnp.zeros(1), prompts, cfg=cfg, max_len=steps, vocab_size=V)
    got = [4] + list(np.asarray(out.tokens[0, 0, 1:]))
    ref = [4]
    for _ in range(steps - 1):  # replay: penalties over the last 3 tokens, then DRY
        x = np.array(table[ref[-1]], np.float64)
        for tok in set(ref[-3:]):
            x[tok] = x[tok] / 1.3 if x[tok] > 0 else x[tok] * 1.3
        ref.append(int(np.argmax(_dry_ref(ref, x, 1.5, 2.0, 2))))
    assert got == ref
    # by hand: 4 | 5 4 5, then "4 5 4 5" repeats 2 tokens before 4: 4 pays 1.5 -> 6
    assert got[:5] == [4, 5, 4, 5, 6]
    plain = decode(markov_step, table, jnp.zeros(1), prompts, cfg={"name": "greedy"},
                   max_len=steps, vocab_size=V)  # fmt: skip
    assert list(np.asarray(plain.tokens[0, 0])) == [4, 5] * (steps // 2)


def _expected(order_fn):
    x = jnp.log(jnp.asarray([[1e-30, 1e-30, 1e-30, 1e-30, 0.5, 0.3, 0.15, 0.05]]))
    return np.asarray(jax.nn.softmax(order_fn(x)))[0]


def test_two_orders_give_the_distributions_they_define():
    probs = np.array([0, 0, 0, 0, 0.5, 0.3, 0.15, 0.05])
    table = jnp.asarray(np.tile(np.log(np.maximum(probs, 1e-30)), (V, 1)), jnp.float32)
    knobs = {"name": "sample", "temperature": 0.5, "min_p": 0.2}
    by_hand = {  # the table's order, then min-p before temperature (llama.cpp's default chain)
        (): lambda x: P.min_p(P.temperature(x, 0.5), 0.2),
        ("min_p", "temperature"): lambda x: P.temperature(P.min_p(x, 0.2), 0.5),
    }
    rows = 4000
    seen = []
    for order, fn in by_hand.items():
        want = _expected(fn)
        out = decode(markov_step, table, jnp.zeros(1), cfg={**knobs, "order": list(order)},
                     max_len=1, num_samples=rows, vocab_size=V, key=1)  # fmt: skip
        freq = np.bincount(np.asarray(out.tokens[0, :, 0]), minlength=V) / rows
        sd = np.sqrt(want * (1 - want) / rows)
        assert (np.abs(freq - want) <= 4.5 * sd + 1e-12).all(), (order, freq, want)
        seen.append(want)
    assert seen[0][6] == 0 and seen[1][6] > 0.05  # the orders really differ: token 6


def test_impossible_orders_are_one_line():
    for order, msg in (
        (["top_k", "nope"], "unknown"),
        (["top_k", "top_k"], "twice"),
        (["temperature", "repetition_penalty"], "cannot run after"),
        (["mirostat", "top_p"], "cannot run after"),
        (["temperature", "dynatemp"], "must run before temperature"),
    ):
        with pytest.raises(UserError, match=msg) as err:
            validate_decoder({"name": "sample", "order": order})
        assert "decoder.order" in str(err.value) and "\n" not in str(err.value)
    assert table.check_order(["xtc", "temperature"])[-3:] == (
        "top_n_sigma",
        "temperature",
        "mirostat",
    )
