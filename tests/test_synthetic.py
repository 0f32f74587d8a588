"""DPFSA oracle: exact probabilities, entropy, mode and step function against brute force."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.data.synthetic import DPFSA, NEG_INF
from seqgen.tokens import BOS_ID, EOS_ID, NUM_SPECIAL, UNK_ID


def all_strings(d: DPFSA, max_len: int, min_logprob: float = -math.inf, start: int | None = None):
    """(ids, logprob) of every possible string with at most max_len symbols (DFS) read from
    state `start` (default: the start state), skipping the continuations of prefixes less
    probable than exp(min_logprob)."""
    out = []

    def walk(state, prefix, lp):
        out.append((list(prefix), lp + d.log_probs[state, EOS_ID]))
        if len(prefix) == max_len or lp < min_logprob:
            return
        for a in np.flatnonzero(d.probs[state] > 0):
            prefix.append(NUM_SPECIAL + int(a))
            walk(int(d.next_state[state, a]), prefix, lp + math.log(d.probs[state, a]))
            prefix.pop()

    walk(d.start if start is None else start, [], 0.0)
    return out


@pytest.fixture(scope="module")
def tiny():
    return DPFSA.random(4, 3, seed=0, stop_prob=0.3)


def test_random_is_sparse_normalised_and_seeded(tiny):
    assert np.allclose(tiny.probs.sum(1) + tiny.stop, 1.0)
    assert (tiny.probs == 0).any() and (tiny.probs > 0).any(1).all()
    again = DPFSA.random(4, 3, seed=0, stop_prob=0.3)
    assert np.array_equal(again.probs, tiny.probs)
    assert not np.array_equal(DPFSA.random(4, 3, seed=1, stop_prob=0.3).probs, tiny.probs)


def test_probabilities_sum_to_one(tiny):
    length = 12
    mass = sum(math.exp(lp) for _, lp in all_strings(tiny, length))
    e0 = np.eye(tiny.num_states)[tiny.start]
    tail = e0 @ np.linalg.matrix_power(tiny.transition_matrix(), length + 1) @ np.ones(4)
    assert 0.9 < mass < 1.0
    assert mass + tail == pytest.approx(1.0, abs=1e-12)


def test_logprob_rejects_impossible_and_non_symbols(tiny):
    q, a = np.argwhere(tiny.probs == 0)[0]
    # reach state q first (BFS over allowed transitions), then take the forbidden symbol
    path = next(s for s, _ in all_strings(tiny, 4) if _state_after(tiny, s) == q)
    assert tiny.logprob(path + [NUM_SPECIAL + int(a)]) == -math.inf
    assert tiny.logprob([EOS_ID]) == -math.inf


def _state_after(d, seq):
    s = d.start
    for t in seq:
        s = d.next_state[s, t - NUM_SPECIAL]
    return s


def test_sample_frequencies_match_logprob(tiny):
    n = 40_000
    samples = tiny.sample(n, seed=3)
    counts = {}
    for s in samples:
        counts[tuple(s)] = counts.get(tuple(s), 0) + 1
    top = sorted(all_strings(tiny, 6), key=lambda x: -x[1])[:8]
    for ids, lp in top:
        p = math.exp(lp)
        sigma = math.sqrt(p * (1 - p) / n)
        assert abs(counts.get(tuple(ids), 0) / n - p) < 4.5 * sigma, (ids, p)
    again = tiny.sample(n, seed=3)
    assert all(np.array_equal(x, y) for x, y in zip(again, samples))


@pytest.mark.parametrize(
    "num_states,alphabet_size,stop_prob,density", [(4, 3, 0.3, 0.5), (2, 2, 0.7, 1.0)]
)
def test_entropy_matches_brute_force(num_states, alphabet_size, stop_prob, density):
    d = DPFSA.random(num_states, alphabet_size, seed=0, stop_prob=stop_prob, density=density)
    strings = all_strings(d, 60, min_logprob=math.log(1e-10))
    mass = sum(math.exp(lp) for _, lp in strings)
    h = -sum(math.exp(lp) * lp for _, lp in strings)
    length = sum(math.exp(lp) * (len(s) + 1) for s, lp in strings)
    assert 1 - 1e-6 < mass <= 1 + 1e-12
    # the strings left out only add (non-negative) terms, and very few of them
    assert 0 <= d.entropy() - h < 1e-5
    assert 0 <= d.expected_length() - length < 1e-5
    assert d.entropy_rate() == pytest.approx(d.entropy() / d.expected_length(), rel=1e-12)
    assert d.entropy_rate() == pytest.approx(h / length, abs=1e-5)


def test_entropy_matches_monte_carlo():
    d = DPFSA.random(8, 5, seed=2, stop_prob=0.1)
    nll = -np.array([d.logprob(s) for s in d.sample(20_000, seed=0)])
    assert abs(nll.mean() - d.entropy()) < 4.5 * nll.std() / math.sqrt(len(nll))


def test_entropy_of_a_geometric_automaton():
    s = 0.2  # one state, one symbol: lengths are geometric
    d = DPFSA(np.zeros((1, 1), int), np.array([[1 - s]]), np.array([s]))
    hb = -(s * math.log(s) + (1 - s) * math.log(1 - s))
    assert d.entropy() == pytest.approx(hb / s, rel=1e-12)
    assert d.expected_length() == pytest.approx(1 / s, rel=1e-12)
    assert d.entropy_rate() == pytest.approx(hb, rel=1e-12)


def test_mode_is_not_greedy():
    # state 0 prefers a (0.45) but "b" then stop (0.35 * 0.9) beats everything
    d = DPFSA(
        np.array([[1, 2], [1, 1], [2, 2]]),
        np.array([[0.45, 0.35], [0.9, 0.0], [0.1, 0.0]]),
        np.array([0.2, 0.1, 0.9]),
    )
    ids, lp = d.mode()
    assert ids == [NUM_SPECIAL + 1] and lp == pytest.approx(math.log(0.35 * 0.9))


def test_mode_matches_brute_force():
    nonempty = 0
    for seed in range(12):
        d = DPFSA.random(5, 3, seed=seed, stop_prob=0.1)
        ids, lp = d.mode()
        # a most probable path never repeats a state, so it has < num_states symbols
        best_ids, best_lp = max(all_strings(d, d.num_states), key=lambda x: x[1])
        assert ids == best_ids and lp == pytest.approx(best_lp, abs=1e-12)
        assert d.logprob(ids) == pytest.approx(lp, abs=1e-12)
        nonempty += len(ids) > 0
    assert nonempty >= 3


def test_step_fn_logits_are_exact_log_probs():
    d = DPFSA.random(6, 4, seed=5, stop_prob=0.2)
    params = d.params()
    step = jax.jit(DPFSA.step_fn)
    seqs = [s for s in d.sample(200, seed=1) if len(s) > 0][:8]
    t = max(len(s) for s in seqs)
    tokens = np.full((len(seqs), t), EOS_ID, np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    carry = d.init_carry(len(seqs))
    assert carry.shape == (len(seqs),) and carry.dtype == jnp.int32
    carry, logits = step(params, carry, jnp.full((len(seqs),), BOS_ID, jnp.int32))
    total = np.zeros(len(seqs))
    for j in range(t + 1):
        assert logits.shape == (len(seqs), d.vocab_size)
        assert not np.isnan(np.asarray(logits)).any()
        np.testing.assert_allclose(jax.nn.logsumexp(logits, axis=-1), 0.0, atol=1e-5)
        target = np.array([s[j] if j < len(s) else EOS_ID for s in seqs])
        live = np.array([j <= len(s) for s in seqs])
        total += np.where(live, np.asarray(logits)[np.arange(len(seqs)), target], 0.0)
        if j < t:
            carry, logits = step(params, carry, jnp.asarray(tokens[:, j]))
    expected = [d.logprob(s) for s in seqs]
    np.testing.assert_allclose(total, expected, rtol=1e-5)


def test_step_fn_start_distribution_and_impossible_tokens():
    d = DPFSA.random(6, 4, seed=5, stop_prob=0.2)
    _, logits = DPFSA.step_fn(d.params(), d.init_carry(1), jnp.array([BOS_ID]))
    logits = np.asarray(logits[0])
    lp = d.log_probs[d.start]
    np.testing.assert_allclose(logits[np.isfinite(lp)], lp[np.isfinite(lp)], rtol=1e-6)
    assert (logits[~np.isfinite(lp)] == NEG_INF).all()


def test_logprob_batch_matches_logprob():
    d = DPFSA.random(6, 4, seed=7, stop_prob=0.2)
    seqs = d.sample(20, seed=2)
    t = max(len(s) for s in seqs) + 2
    tokens = np.zeros((20, t), np.int32)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = s
    lengths = np.array([len(s) for s in seqs])
    ended = np.arange(20) % 2 == 0
    got = d.logprob_batch(tokens, lengths, ended)
    for i, s in enumerate(seqs):
        stop = d.log_probs[_state_after(d, s), EOS_ID]
        want = d.logprob(s) - (0.0 if ended[i] else stop)
        assert got[i] == pytest.approx(want, abs=1e-9)


# ----- conditioning on a prompt: the state it leads to


def _prompts_to_every_state(d: DPFSA, max_len: int = 6) -> dict[int, list[int]]:
    """A shortest possible prompt leading to each reachable state (brute force)."""
    found: dict[int, list[int]] = {}
    for ids, _ in sorted(all_strings(d, max_len), key=lambda x: len(x[0])):
        found.setdefault(int(_state_after(d, ids)), ids)
    return found


def test_state_after_follows_the_path_and_rejects_impossible_prefixes(tiny):
    for ids, _ in all_strings(tiny, 4):
        assert tiny.state_after(ids) == _state_after(tiny, ids)
    q, a = np.argwhere(tiny.probs == 0)[0]
    path = _prompts_to_every_state(tiny)[int(q)]
    assert tiny.state_after(path + [NUM_SPECIAL + int(a)]) is None
    assert tiny.state_after([EOS_ID]) is None and tiny.state_after([UNK_ID]) is None
    assert tiny.state_after([]) == tiny.start


def test_conditional_logprob_is_joint_minus_prompt():
    # log p(x | prompt) = log p(prompt x EOS) - log p_prefix(prompt), read from the prompt's state
    d = DPFSA.random(6, 4, seed=7, stop_prob=0.2)
    seqs = [s for s in d.sample(60, seed=4) if len(s) >= 3][:10]
    cuts = [1 + i % (len(s) - 1) for i, s in enumerate(seqs)]
    prompts = [s[:c] for s, c in zip(seqs, cuts)]
    conts = [s[c:] for s, c in zip(seqs, cuts)]
    t = max(len(c) for c in conts)
    tokens = np.zeros((len(seqs), t), np.int32)
    for i, c in enumerate(conts):
        tokens[i, : len(c)] = c
    states = np.array([d.state_after(p) for p in prompts])
    ended = np.arange(len(seqs)) % 3 != 0
    got = d.logprob_batch(tokens, [len(c) for c in conts], ended, start=states)
    for i, (s, p) in enumerate(zip(seqs, prompts)):
        prompt_lp = d.logprob_batch(np.asarray([p]), [len(p)], [False])[0]
        full = d.logprob(s) if ended[i] else d.logprob_batch(np.asarray([s]), [len(s)], [False])[0]
        assert got[i] == pytest.approx(full - prompt_lp, abs=1e-9)
    assert not np.allclose(got, d.logprob_batch(tokens, [len(c) for c in conts], ended))


def test_conditional_mode_matches_brute_force_from_the_prompts_state():
    checked = differs = 0
    for seed in range(8):
        d = DPFSA.random(5, 3, seed=seed, stop_prob=0.1)
        for q, prompt in _prompts_to_every_state(d).items():
            ids, lp = d.mode(d.state_after(prompt))
            # every continuation from q (a most probable path never repeats a state)
            best_ids, best_lp = max(all_strings(d, d.num_states, start=q), key=lambda x: x[1])
            assert ids == best_ids and lp == pytest.approx(best_lp, abs=1e-12)
            prompt_lp = d.logprob_batch(np.asarray([prompt or [0]]), [len(prompt)], [False])[0]
            assert d.logprob(prompt + ids) - prompt_lp == pytest.approx(lp, abs=1e-12)
            checked += 1
            differs += ids != d.mode()[0]
    assert checked > 20 and differs > 5  # conditioning changes the mode


def test_entropy_and_length_from_a_state_satisfy_their_recursions():
    # H(q) = H(next token | q) + sum_a p(a|q) H(next(q, a)); likewise E|x|_q = 1 + sum_a ...
    d = DPFSA.random(6, 4, seed=3, stop_prob=0.2)
    h = np.array([d.entropy(q) for q in range(d.num_states)])
    length = np.array([d.expected_length(q) for q in range(d.num_states)])
    np.testing.assert_allclose(h, d.state_entropy() + (d.probs * h[d.next_state]).sum(1))
    np.testing.assert_allclose(length, 1 + (d.probs * length[d.next_state]).sum(1))
    assert h[d.start] == d.entropy() and len(set(np.round(h, 6))) > 1
