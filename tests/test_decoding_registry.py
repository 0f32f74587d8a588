"""The decoder registry (`decoding/registry.py`) and the one entry path: validation names
the knob, the decoders' table, bad prompts."""

from __future__ import annotations

from types import SimpleNamespace as NS

import jax.numpy as jnp
import numpy as np
import pytest

from seqgen.decoding import (
    SPECS,
    decode,
)
from seqgen.errors import UserError
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    markov_step,
    markov_table,
)

# ----- validation -----


@pytest.mark.parametrize(
    ("cfg", "kwargs", "needle"),
    [
        ({"name": "beam", "beam_size": 0}, {}, "beam_size"),
        ({"name": "sample", "top_p": 0.0}, {}, "top_p"),
        ({"name": "sample", "top_p": 1.5}, {}, "top_p"),
        ({"name": "sample", "top_k": -1}, {}, "top_k"),
        ({"name": "sample", "temperature": -0.1}, {}, "temperature"),
        ({"name": "sample", "typical_p": 0.0}, {}, "typical_p"),
        ({"name": "sample", "min_p": 1.5}, {}, "min_p"),
        ({"name": "sample", "epsilon": 1.0}, {}, "epsilon"),
        ({"name": "sample", "eta": -0.1}, {}, "eta"),
        ({"name": "sample", "repetition_penalty": 0.0}, {}, "repetition_penalty"),
        ({"name": "sample", "no_repeat_ngram_size": -1}, {}, "no_repeat_ngram_size"),
        ({"name": "beam", "length_penalty": "log"}, {}, "length_penalty"),
        ({"name": "beam", "min_length": -1}, {}, "min_length"),
        ({"name": "greedy", "min_length": 1.5}, {}, "min_length"),
        ({"name": "sample", "min_tokens_to_keep": 0}, {}, "min_tokens_to_keep"),
        ({"name": "sample", "min_tokens_to_keep": 11}, {}, "min_tokens_to_keep"),
        ({"name": "beam", "alpha": -1.0}, {}, "alpha"),
        ({"name": "diverse_beam", "beam_size": 4, "num_groups": 3}, {}, "num_groups"),
        ({"name": "diverse_beam", "diversity_penalty": -1.0}, {}, "diversity_penalty"),
        ({"name": "stochastic_beam", "temperature": 0.0}, {}, "temperature"),
        ({"name": "nucleus"}, {}, "decoder.name"),
        ({"name": "sample"}, {"max_len": 0}, "max_len"),
        ({"name": "sample"}, {"max_len": 2}, "max_len"),  # prompt of length 3 > max_len
        ({"name": "sample"}, {"num_samples": 0}, "num_samples"),
    ],
)
def test_validation_errors_name_the_knob(cfg, kwargs, needle):
    table = jnp.asarray(markov_table(10, 0))
    call = dict(cfg=NS(**cfg), max_len=8, vocab_size=10, num_samples=1, key=0)
    call.update(kwargs)
    with pytest.raises(UserError, match=needle):
        decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, **call)


def test_top_k_at_or_above_the_vocabulary_is_no_truncation():
    # Hugging Face's rule: top_k >= V keeps every token; the output equals top_k=0 bit for bit
    table = jnp.asarray(markov_table(10, 0))
    call = dict(max_len=8, vocab_size=10, num_samples=4, key=3)
    off = decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(top_k=0), **call)
    for k in (10, 11, 640):
        out = decode(
            markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS, cfg=NS(top_k=k), **call
        )
        np.testing.assert_array_equal(np.asarray(out.tokens), np.asarray(off.tokens))
        np.testing.assert_array_equal(
            np.asarray(out.processed_logprobs), np.asarray(off.processed_logprobs)
        )


def test_decoder_table_and_bad_prompts():
    assert set(SPECS) >= {
        "greedy",
        "sample",
        "beam",
        "stochastic_beam",
        "diverse_beam",
        "exact",
        "mbr",
    }
    table = jnp.asarray(markov_table(10, 0))
    bad = PROMPTS.copy()
    bad[0, 0] = 10
    with pytest.raises(UserError, match="vocabulary"):
        decode(
            markov_step,
            table,
            jnp.zeros(3),
            bad,
            PROMPT_LENGTHS,
            cfg=None,
            max_len=8,
            vocab_size=10,
        )
    with pytest.raises(UserError, match="prompts"):
        decode(
            markov_step,
            table,
            jnp.zeros(2),
            PROMPTS,
            PROMPT_LENGTHS,
            cfg=None,
            max_len=8,
            vocab_size=10,
        )


def test_score_unit_follows_what_each_decoder_ranks_by():
    """The unit of `score/mean` for every built-in: power and MBR had none or a wrong one."""
    from seqgen.decoding.registry import score_unit

    want = {
        ("beam", "none"): "mean log-prob (nats per sequence)",
        ("beam", "average"): "mean log-prob / length (nats per token)",
        ("beam", "gnmt"): "mean log-prob / ((5+L)/6)^alpha (nats)",
        ("beam", "power"): "mean log-prob / L^alpha (nats)",
        ("diverse_beam", "power"): "mean log-prob / L^alpha (nats)",
        # samplers and exact search ignore the length penalty: their scores are log-probs
        ("sample", "average"): "mean log-prob (nats per sequence)",
        ("greedy", "gnmt"): "mean log-prob (nats per sequence)",
        ("exact", "none"): "mean log-prob (nats per sequence)",
        ("stochastic_beam", "average"): "mean perturbed log-prob G (nats per sequence)",
    }
    for (name, lp), unit in want.items():
        assert score_unit({"name": name, "length_penalty": lp}) == unit, (name, lp)
    assert score_unit({"name": "mbr", "utility": "bleu"}) == "mean expected utility, bleu (0-1)"
    assert set(SPECS) <= {n for n in SPECS if score_unit({"name": n})}  # every decoder has one


def test_registry_facts_drive_the_pipeline():
    """Constraint support, nesting and rows kept per prompt are read from the rows."""
    from seqgen.decoding import registry

    with pytest.raises(UserError, match="exact is not supported with a constraint"):
        registry.check_constraint({"name": "exact"}, "compare[1]")
    registry.check_constraint({"name": "beam"})
    for bad in ("exact", "mbr"):
        with pytest.raises(UserError, match="is not allowed; use a sampler or beam"):
            registry.validate_decoder({"name": "mbr", "candidates": {"name": bad}})
    with pytest.raises(UserError, match="decoder.references.top_p"):
        registry.validate_decoder({"name": "mbr", "references": {"top_p": 2.0}})
    kept = registry.kept_per_prompt
    assert kept({"name": "beam"}, 5, prompted=False) == 1
    assert kept({"name": "sample"}, 5, prompted=True) == 5
    assert kept({"name": "stochastic_beam"}, 5, prompted=False) == 5
    assert kept({"name": "stochastic_beam"}, 5, prompted=True) == 1
    assert registry.rows_per_prompt({"name": "diverse_beam", "beam_size": 6}, 3) == 6
    assert registry.rows_per_prompt({"name": "sample"}, 3) == 3
