"""Tiny step functions and references shared by the decoding tests (module level: the same
function object each call, so compiles are reused), on 2 CPU cores in seconds: a Markov
transition table, a 16-unit LSTM, a position-aware table."""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from seqgen.tokens import EOS_ID


def markov_step(params, carry, tokens):
    """Next-token logits depend only on the previous token: params [V, V]."""
    return carry, params[tokens]


def lstm_step(params, carry, tokens):
    """A one-layer LSTM language model step, the same math as an nn.LSTM cell."""
    c, h = carry
    x = params["emb"][tokens]
    z = jnp.concatenate([x, h], axis=-1) @ params["w"] + params["b"]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (c, h), h @ params["out"] + params["out_b"]


def position_step(params, carry, tokens):
    """Markov table for positions < params['stop_at']; EOS is certain at position stop_at."""
    logits = params["table"][tokens]
    eos_only = jnp.full_like(logits, -1e9).at[:, EOS_ID].set(0.0)
    logits = jnp.where((carry >= params["stop_at"])[:, None], eos_only, logits)
    return carry + 1, logits


def markov_table(v: int, seed: int, scale: float = 1.5) -> np.ndarray:
    """Random logits with PAD, BOS, UNK impossible (as in a trained model)."""
    rng = np.random.default_rng(seed)
    t = rng.normal(size=(v, v)) * scale
    t[:, [0, 1, 3]] = -1e9
    return t.astype(np.float32)


def log_softmax64(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, np.float64)
    m = x.max(-1, keepdims=True)
    return x - m - np.log(np.exp(x - m).sum(-1, keepdims=True))


def lstm_params(v: int = 9, hidden: int = 16, seed: int = 0, eos_bias: float = 0.0) -> dict:
    rng = np.random.default_rng(seed)
    out_b = rng.normal(size=v) * 0.5
    out_b[[0, 1, 3]] = -1e9
    out_b[EOS_ID] += eos_bias
    return {
        "emb": jnp.asarray(rng.normal(size=(v, 8)), jnp.float32),
        "w": jnp.asarray(rng.normal(size=(8 + hidden, 4 * hidden)) * 0.5, jnp.float32),
        "b": jnp.zeros(4 * hidden, jnp.float32),
        "out": jnp.asarray(rng.normal(size=(hidden, v)) * 1.5, jnp.float32),
        "out_b": jnp.asarray(out_b, jnp.float32),
    }


def to_numpy(out):
    """Index on host arrays: element-wise indexing of jax arrays dispatches a device op each."""
    return jax.tree.map(np.asarray, out)


def markov_beam(table, max_len: int, prompts=None, plens=None, **knobs):
    """Beam search over a Markov table of logits [V, V] (`markov_step`), one row per prompt
    (one from BOS without prompts), with the decoder knobs `knobs`; numpy outputs."""
    from types import SimpleNamespace

    from seqgen.decoding import DecodeRequest, beam

    b = 1 if prompts is None else len(prompts)
    req = DecodeRequest(
        markov_step,
        jnp.asarray(table, jnp.float32),
        jnp.zeros(b),
        prompts,
        plens,
        max_len=max_len,
        vocab_size=np.shape(table)[-1],
        cfg=SimpleNamespace(**knobs),
    )
    return to_numpy(beam(req))


def lstm_carry(batch: int, hidden: int = 16):
    return (jnp.zeros((batch, hidden)), jnp.zeros((batch, hidden)))


PROMPTS = np.array([[4, 5, 6], [7, 0, 0], [0, 0, 0]], np.int32)
PROMPT_LENGTHS = np.array([3, 1, 0], np.int32)


def seq_logprob(table_lp: np.ndarray, seq: list[int], ended: bool) -> float:
    """log p(seq [+ EOS]) under a Markov table of log-probs, starting from BOS."""
    prev, total = 1, 0.0
    for tok in seq:
        total += table_lp[prev, tok]
        prev = tok
    return total + (table_lp[prev, EOS_ID] if ended else 0.0)


def brute_force_logprob(table_lp, prompt, seq, ended) -> float:
    """log p(seq [+ EOS]) under a Markov table of log-probs after a prompt (BOS if none)."""
    prev, total = (prompt[-1] if prompt else 1), 0.0
    for tok in seq:
        total += table_lp[prev, tok]
        prev = tok
    return total + (table_lp[prev, EOS_ID] if ended else 0.0)


@contextlib.contextmanager
def restored_tables():
    """Give back the processor table, the knobs and the decoder registry as they were, so a
    test's registrations do not reach the other tests of the session."""
    from seqgen.decoding import processor_table, registry
    from seqgen.decoding.common import DEFAULTS
    from seqgen.decoding.knobs import KNOBS

    tables = (processor_table.PROCESSORS, KNOBS, DEFAULTS, registry.SPECS)
    saved = [dict(t) for t in tables]
    order = list(processor_table.ORDER)
    try:
        yield
    finally:
        for t, s in zip(tables, saved):
            t.clear()
            t.update(s)
        processor_table.ORDER[:] = order
