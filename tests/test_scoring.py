"""Teacher-forced scoring under a step function: each token's log-prob given BOS, the prompt
and the tokens before it, and EOS's only where the sequence ended."""

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.scoring import LoadedModel, score_sequences
from seqgen.tokens import BOS_ID, EOS_ID

V = 6
# A bigram model: row = previous token, the next token's probabilities.
TABLE = np.full((V, V), 0.05)
TABLE[BOS_ID] = [0.05, 0.05, 0.05, 0.05, 0.6, 0.2]
TABLE[4] = [0.05, 0.05, 0.3, 0.05, 0.15, 0.4]
TABLE[5] = [0.05, 0.05, 0.5, 0.05, 0.3, 0.05]


def bigram_step(params, carry, tokens):  # logits are log-probs: log_softmax leaves them
    return carry, params[tokens]


MODEL = LoadedModel(
    step_fn=bigram_step,
    params=jnp.log(jnp.asarray(TABLE / TABLE.sum(1, keepdims=True), jnp.float32)),
    init_carry=lambda b, max_len=None: jnp.zeros((b,)),
    vocab_size=V,
)


def p(prev, nxt):
    return float(np.log(TABLE[prev, nxt] / TABLE[prev].sum()))


def test_each_continuation_token_is_scored_after_bos_and_its_prompt():
    prompts = [np.array([4], np.int32), np.zeros(0, np.int32)]
    conts = [np.array([5, 4], np.int32), np.array([4], np.int32)]
    lps, eos = score_sequences(MODEL, prompts, conts, [True, False])
    # BOS 4 | 5 4 EOS: the prompt token is not scored
    assert lps[0] == pytest.approx([p(4, 5), p(5, 4)], rel=1e-6)
    assert eos[0] == pytest.approx(p(4, EOS_ID), rel=1e-6)
    # BOS | 4, cut at the budget: no EOS term
    assert lps[1] == pytest.approx([p(BOS_ID, 4)], rel=1e-6) and eos[1] == 0.0


def test_nothing_to_score():
    assert score_sequences(MODEL, [], [], []) == ([], [])


def test_a_batch_scores_each_row_as_alone():
    """Padding to the longest row changes no row's log-probs."""
    prompts = [np.zeros(0, np.int32)] * 2
    conts = [np.array([4, 5, 4, 5], np.int32), np.array([5], np.int32)]
    both, _ = score_sequences(MODEL, prompts, conts, [True, True])
    alone, _ = score_sequences(MODEL, prompts[1:], conts[1:], [True])
    assert np.array_equal(both[1], alone[0])
    assert both[0] == pytest.approx([p(1, 4), p(4, 5), p(5, 4), p(4, 5)], rel=1e-6)
