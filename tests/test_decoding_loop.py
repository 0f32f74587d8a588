"""The loop variants (`decoding/loop.py`): the same bits from every decoder."""

from __future__ import annotations

import jax.numpy as jnp
import pytest

from seqgen.decoding import (
    LOOPS,
    decode,
)
from seqgen.errors import UserError
from seqgen.tokens import EOS_ID
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    markov_step,
    markov_table,
    to_numpy,
)

# ----- the loop variants: the same bits from every decoder -----


@pytest.mark.slow
def test_every_loop_variant_gives_the_same_bits():
    """Every decoder, every `loop` (scan, unrolled scan, masked scan, while loop) returns the
    same outputs bit for bit; EOS is likely, so the batch ends before max_len and the variants
    really differ in what they run after it (skip, mask, stop)."""
    table = markov_table(9, 4)
    table[:, EOS_ID] += 2.0
    params, carry = jnp.asarray(table), jnp.zeros(3)
    cfgs = [
        {"name": "greedy", "repetition_penalty": 1.3},
        {"name": "sample", "top_p": 0.9, "no_repeat_ngram_size": 2, "mirostat_tau": 3.0},
        {"name": "beam", "beam_size": 3, "length_penalty": "gnmt"},
        {"name": "diverse_beam", "beam_size": 4, "num_groups": 2, "diversity_penalty": 0.5},
        {"name": "stochastic_beam", "beam_size": 3},
        {"name": "exact", "beam_size": 2, "max_expansions": 20},
        {"name": "mbr", "num_candidates": 3, "num_references": 3},
    ]
    for cfg in cfgs:
        outs = {}
        for loop in LOOPS:
            out = decode(
                markov_step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=cfg, max_len=12,
                num_samples=2, key=7, vocab_size=9, loop=loop,
            )  # fmt: skip
            outs[loop] = to_numpy(out)
        assert outs["scan"].ended.any(axis=1).all(), cfg  # rows end: the skip is exercised
        for loop, out in outs.items():
            for f in out.__dataclass_fields__:
                a, b = getattr(outs["scan"], f), getattr(out, f)
                assert (a is None) == (b is None), (cfg["name"], loop, f)
                if a is not None:
                    assert a.dtype == b.dtype and a.tobytes() == b.tobytes(), (cfg, loop, f)


def test_unknown_loop_is_a_user_error():
    with pytest.raises(UserError, match="decode.loop='fast' is unknown; allowed: auto, scan"):
        decode(markov_step, jnp.zeros((9, 9)), jnp.zeros(1), cfg=None, max_len=2, vocab_size=9,
               loop="fast")  # fmt: skip
