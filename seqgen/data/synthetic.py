"""A synthetic oracle: a seeded random deterministic probabilistic finite-state automaton.

A DPFSA has states q, a start state 0, and in each state a distribution over the next
symbol and "stop" (EOS); emitting symbol a moves deterministically to state next(q, a).
Because the automaton is deterministic, a string determines its path, so everything a
decoding study needs is exact (cf. the formal-language analyses of Cotterell et al. 2024,
"Formal aspects of language modeling"):

- ``logprob(s)`` = sum of the transition log-probabilities along the path + log stop.
- ``entropy()`` = sum_q E[visits to q] * H(next token | q), with the expected visit counts
  solving ``n = e_0 + P^T n`` (P = state-to-state transition matrix, substochastic since
  every state stops with positive probability); ``entropy_rate()`` = entropy / expected
  length, the length counting EOS (= sum_q n_q, one token per visit).
- ``mode()`` = the most probable string: Dijkstra on costs -log p over states plus a
  virtual final node reached by stopping (costs are >= 0 and the cost of a string is the
  sum of its transition costs plus the stop cost, so the shortest path is the mode).

Conditioning on a prompt is exact too: a possible prefix leads to one state q
(``state_after``), and p(x | prefix) is the distribution of the automaton started in q, so
``logprob_batch``, ``entropy``, ``expected_length`` and ``mode`` take a ``start`` state
(default: the start state 0).

Symbols are token ids NUM_SPECIAL..NUM_SPECIAL+alphabet_size-1; stopping emits EOS_ID.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np

from seqgen.tokens import EOS_ID, NUM_SPECIAL, UNK_ID

NEG_INF = -1e9  # logit of an impossible token (finite, so no NaN in softmax)


class DPFSA:
    """Deterministic PFSA over ids NUM_SPECIAL.. with per-state stop probabilities.

    Args:
      next_state: int [Q, A], next_state[q, a] for symbol index a (= token id - NUM_SPECIAL).
      probs: float [Q, A], probability of symbol index a in state q (0 = not allowed).
      stop: float [Q], stop probability per state; probs[q].sum() + stop[q] == 1.
    """

    def __init__(self, next_state: np.ndarray, probs: np.ndarray, stop: np.ndarray):
        self.next_state = np.asarray(next_state, dtype=np.int64)
        self.probs = np.asarray(probs, dtype=np.float64)
        self.stop = np.asarray(stop, dtype=np.float64)
        q, a = self.probs.shape
        if self.next_state.shape != (q, a) or self.stop.shape != (q,):
            raise ValueError("next_state [Q,A], probs [Q,A] and stop [Q] shapes disagree")
        if np.any(self.stop <= 0):
            raise ValueError("every state needs a positive stop probability")
        if not np.allclose(self.probs.sum(1) + self.stop, 1.0):
            raise ValueError("probs[q].sum() + stop[q] must be 1 in every state")
        self.num_states, self.alphabet_size = q, a
        self.vocab_size = NUM_SPECIAL + a
        self.start = 0
        # Full-vocabulary log-probs per state, float64: [Q, V] (-inf = impossible).
        with np.errstate(divide="ignore"):
            lp = np.full((q, self.vocab_size), -np.inf)
            lp[:, NUM_SPECIAL:] = np.log(self.probs)
            lp[:, EOS_ID] = np.log(self.stop)
        self.log_probs = lp
        self._modes: dict[int, tuple[list[int], float]] = {}  # mode() per start state

    @classmethod
    def random(
        cls,
        num_states: int,
        alphabet_size: int,
        seed: int,
        *,
        stop_prob: float = 0.1,
        density: float = 0.5,
        concentration: float = 1.0,
    ) -> DPFSA:
        """A random DPFSA.

        Each state allows a random subset of the symbols (each kept with probability
        `density`, at least one), with Dirichlet(`concentration`) weights on them and
        random next states; its stop probability is `stop_prob` times a factor drawn
        uniformly in [0.5, 1.5] (clipped below 1), so expected lengths are about 1/stop_prob,
        except the start state, which stops 10 times less (otherwise the empty string would
        often be the mode)."""
        if num_states < 1 or alphabet_size < 1:
            raise ValueError("num_states and alphabet_size must be >= 1")
        if not 0.0 < stop_prob < 1.0:
            raise ValueError(f"stop_prob must be in (0, 1), got {stop_prob}")
        rng = np.random.default_rng(seed)
        q, a = num_states, alphabet_size
        allowed = rng.random((q, a)) < density
        allowed[np.arange(q), rng.integers(0, a, size=q)] = True
        weights = rng.dirichlet(np.full(a, concentration), size=q) * allowed
        weights = np.maximum(weights, 1e-3 * allowed)  # no allowed symbol is ~impossible
        weights /= weights.sum(1, keepdims=True)
        stop = np.clip(stop_prob * rng.uniform(0.5, 1.5, size=q), 1e-6, 0.95)
        stop[0] *= 0.1  # the start state rarely stops: the empty string is rarely the mode
        probs = weights * (1.0 - stop)[:, None]
        next_state = rng.integers(0, q, size=(q, a))
        return cls(next_state, probs, stop)

    # ----- step-function protocol (pure, jittable) -----

    def params(self) -> dict[str, jnp.ndarray]:
        """Tables for `step_fn`: state Q is a sink entered by an impossible or special token
        (it stops with probability 1); BOS, EOS and PAD leave the state unchanged."""
        q, v = self.num_states, self.vocab_size
        nxt = np.full((q + 1, v), q, dtype=np.int32)
        nxt[:q, NUM_SPECIAL:] = np.where(self.probs > 0, self.next_state, q)
        for tok in range(NUM_SPECIAL):
            if tok != UNK_ID:  # UNK is not a symbol of the automaton: it leads to the sink
                nxt[:, tok] = np.arange(q + 1)
        logits = np.full((q + 1, v), NEG_INF, dtype=np.float32)
        logits[:q] = np.where(np.isfinite(self.log_probs), self.log_probs, NEG_INF)
        logits[q, EOS_ID] = 0.0
        return {"next": jnp.asarray(nxt), "logits": jnp.asarray(logits)}

    def init_carry(self, batch: int, max_len: int | None = None) -> jnp.ndarray:
        """Start state for each row: int32 [batch] (the same size at any `max_len`)."""
        return jnp.full((batch,), self.start, dtype=jnp.int32)

    @staticmethod
    def step_fn(
        params: dict[str, jnp.ndarray], carry: jnp.ndarray, tokens: jnp.ndarray
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """Feed tokens [B] from states carry [B]: new states and exact next-token log-probs
        [B, V]. Feeding BOS from the start state gives the start distribution."""
        new = params["next"][carry, tokens]  # [B]
        return new, params["logits"][new]  # [B, V]

    # ----- exact quantities (numpy, float64) -----

    def logprob(self, seq: Sequence[int]) -> float:
        """log p(seq + EOS); -inf if impossible (a token that is not a symbol included)."""
        state, total = self.start, 0.0
        for tok in seq:
            tok = int(tok)
            if not NUM_SPECIAL <= tok < self.vocab_size:
                return -math.inf
            total += self.log_probs[state, tok]
            if total == -math.inf:
                return total
            state = self.next_state[state, tok - NUM_SPECIAL]
        return float(total + self.log_probs[state, EOS_ID])

    def state_after(self, prefix: Sequence[int]) -> int | None:
        """The state reached by reading `prefix` (token ids, no BOS) from the start state;
        None if the prefix is impossible (a token that is not a symbol, or a symbol of
        probability 0 on the way)."""
        state = self.start
        for tok in prefix:
            a = int(tok) - NUM_SPECIAL
            if not 0 <= a < self.alphabet_size or self.probs[state, a] == 0:
                return None
            state = int(self.next_state[state, a])
        return state

    def logprob_batch(
        self,
        tokens: np.ndarray,
        lengths: np.ndarray,
        ended: np.ndarray | None = None,
        start: np.ndarray | None = None,
    ) -> np.ndarray:
        """log-prob of the first lengths[i] tokens of each row [N, T], plus log stop where
        ended[i] (default: all ended), reading row i from state start[i] (default: the start
        state), i.e. log p(row | a prefix leading to start[i]). float64 [N]; -inf for
        impossible rows."""
        tokens = np.asarray(tokens)
        lengths = np.asarray(lengths)
        n, t = tokens.shape
        ended = np.ones(n, bool) if ended is None else np.asarray(ended, bool)
        state = self._start_states(start, n)
        total = np.zeros(n)
        dead = np.zeros(n, bool)
        for j in range(t):
            live = j < lengths
            tok = tokens[:, j].astype(np.int64)
            sym = (tok >= NUM_SPECIAL) & (tok < self.vocab_size)
            bad = live & ~sym
            dead |= bad
            ok = live & sym
            tok_c = np.where(ok, tok, NUM_SPECIAL)
            lp = self.log_probs[state, tok_c]
            total = np.where(ok, total + lp, total)
            state = np.where(ok, self.next_state[state, tok_c - NUM_SPECIAL], state)
        total = np.where(ended, total + self.log_probs[state, EOS_ID], total)
        return np.where(dead, -np.inf, total)

    def transition_matrix(self) -> np.ndarray:
        """P[q, q'] = probability of moving from q to q' by emitting a symbol: [Q, Q]."""
        p = np.zeros((self.num_states, self.num_states))
        rows = np.repeat(np.arange(self.num_states), self.alphabet_size)
        np.add.at(p, (rows, self.next_state.ravel()), self.probs.ravel())
        return p

    def _start_states(self, start: np.ndarray | int | None, n: int) -> np.ndarray:
        state = np.broadcast_to(np.asarray(self.start if start is None else start), (n,))
        if not ((state >= 0) & (state < self.num_states)).all():
            raise ValueError(f"start states must be in [0, {self.num_states})")
        return state.astype(np.int64)

    def expected_visits(self, start: int | None = None) -> np.ndarray:
        """n[q] = expected number of visits to q (tokens emitted from q, EOS included),
        starting in `start` (default: the start state)."""
        p = self.transition_matrix()
        e0 = np.zeros(self.num_states)
        e0[self._start_states(start, 1)[0]] = 1.0
        return np.linalg.solve(np.eye(self.num_states) - p.T, e0)

    def state_entropy(self) -> np.ndarray:
        """H(next token | q) in nats, EOS included: [Q]."""
        lp = np.where(np.isfinite(self.log_probs), self.log_probs, 0.0)
        return -(np.exp(self.log_probs) * lp).sum(1)

    def entropy(self, start: int | None = None) -> float:
        """Exact entropy of the distribution over strings from `start` (default: the start
        state), in nats."""
        return float(self.expected_visits(start) @ self.state_entropy())

    def expected_length(self, start: int | None = None) -> float:
        """Expected number of tokens per string from `start`, EOS included."""
        return float(self.expected_visits(start).sum())

    def entropy_rate(self) -> float:
        """Entropy per token (EOS included): entropy() / expected_length()."""
        return self.entropy() / self.expected_length()

    def mode(self, start: int | None = None) -> tuple[list[int], float]:
        """The most probable string from state `start` (default: the start state; from the
        state a prompt leads to, the conditional mode given the prompt): token ids, no EOS,
        and its log-probability. Memoised per state.

        Dijkstra from `start` over costs -log p(a | q) >= 0, with stopping an edge to a
        virtual final node of cost -log stop[q]; ties are broken by smaller state id.
        """
        source = int(self._start_states(start, 1)[0])
        if source not in self._modes:
            self._modes[source] = self._dijkstra(source)
        ids, lp = self._modes[source]
        return list(ids), lp

    def _dijkstra(self, source: int) -> tuple[list[int], float]:
        q = self.num_states
        final = q
        dist = np.full(q + 1, np.inf)
        back: list[tuple[int, int] | None] = [None] * (q + 1)  # (previous node, token)
        dist[source] = 0.0
        heap = [(0.0, source)]
        done = np.zeros(q + 1, bool)
        while heap:
            d, u = heapq.heappop(heap)
            if done[u]:
                continue
            done[u] = True
            if u == final:
                break
            edges = [(final, EOS_ID, -math.log(self.stop[u]))]
            for a in np.flatnonzero(self.probs[u] > 0):
                edges.append(
                    (int(self.next_state[u, a]), NUM_SPECIAL + int(a), -math.log(self.probs[u, a]))
                )
            for v, tok, c in edges:
                if d + c < dist[v]:
                    dist[v] = d + c
                    back[v] = (u, tok)
                    heapq.heappush(heap, (d + c, v))
        out: list[int] = []
        node = final
        while back[node] is not None:
            prev, tok = back[node]
            if tok != EOS_ID:
                out.append(tok)
            node = prev
        out.reverse()
        return out, float(-dist[final])

    def sample(self, n: int, seed: int) -> list[np.ndarray]:
        """n independent strings (int32 token ids, without EOS), vectorised over rows."""
        rng = np.random.default_rng(seed)
        # CDF over [EOS, symbols...] per state.
        table = np.concatenate([self.stop[:, None], self.probs], axis=1)
        cdf = np.cumsum(table, axis=1)
        cdf[:, -1] = 1.0 + 1e-12
        state = np.full(n, self.start)
        alive = np.ones(n, bool)
        steps: list[np.ndarray] = []
        while alive.any():
            u = rng.random(n)
            choice = (u[:, None] >= cdf[state]).sum(1)  # 0 = stop, k = symbol k-1
            choice = np.where(alive, choice, 0)
            alive &= choice > 0
            steps.append(np.where(alive, NUM_SPECIAL + choice - 1, -1))
            sym = np.maximum(choice - 1, 0)
            state = np.where(alive, self.next_state[state, sym], state)
        mat = np.stack(steps, 1) if steps else np.zeros((n, 0), int)
        return [row[row >= 0].astype(np.int32) for row in mat]

    def symbol_names(self) -> list[str]:
        """Printable names of the symbols: a, b, ... (s26, s27, ... beyond 26)."""
        return [chr(ord("a") + i) if i < 26 else f"s{i}" for i in range(self.alphabet_size)]
