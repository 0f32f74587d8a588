"""A logits processor and a decoder added from outside the package, as a user would from their
own file (one call each), run through `decode(...)` and through the Hydra config and
`run_experiment` like the built-ins."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compose

from seqgen.config import validate_config
from seqgen.decoding import (
    Knob,
    decode,
    register_decoder,
    register_processor,
    registry,
    render_order,
)
from seqgen.decoding.common import get
from seqgen.errors import UserError
from tests.helpers_decoding import (
    PROMPT_LENGTHS,
    PROMPTS,
    lstm_carry,
    lstm_params,
    lstm_step,
    markov_step,
    markov_table,
    restored_tables,
)

# ----- the user's code -----


def ban(logits, ctx):
    """Ban one token: logit -inf for the id `ban_token` (-1: off)."""
    return jnp.where(jnp.arange(logits.shape[-1]) == ctx.knobs["ban_token"], -jnp.inf, logits)


def random_drop(logits, ctx):
    """Drop every token but the most probable with probability `drop_prob`, drawn with the
    row's own key (`ctx.keys`)."""
    u = jax.vmap(lambda k: jax.random.uniform(k, logits.shape[-1:]))(ctx.keys)  # [R, V]
    top = logits >= jnp.max(logits, axis=-1, keepdims=True)
    return jnp.where((u < ctx.knobs["drop_prob"]) & ~top, -jnp.inf, logits)


def best_of(req, prep):
    """`num_candidates` ancestral samples per prompt, returned best first by log-prob."""
    out = decode(
        req.step_fn,
        req.params,
        req.init_carry,
        prep.prompts,
        prep.prompt_lengths,
        cfg={"name": "sample", "temperature": get(req.cfg, "temperature")},
        max_len=req.max_len,
        num_samples=int(get(req.cfg, "num_candidates")),
        key=prep.key,
        vocab_size=req.vocab_size,
        prompt_ids=prep.prompt_ids,
        constraint=req.constraint,
        loop=req.loop,
    )
    order = jnp.argsort(-out.scores, axis=1)  # [B, N]

    def pick(x):
        if x.ndim < 2:
            return x
        return jnp.take_along_axis(x, order.reshape(order.shape + (1,) * (x.ndim - 2)), axis=1)

    return jax.tree.map(pick, out)


def register_user_code() -> None:
    register_processor(
        "ban_token",
        ban,
        stage="penalty",
        knobs=(Knob("ban_token", int, -1, traced=True, low=-1, neutral=-1, doc="-1 = off"),),
    )
    register_processor(
        "random_drop",
        random_drop,
        stage="truncation",
        knobs=(Knob("drop_prob", float, 0.0, True, 0.0, 1.0, high_open=True, neutral=0.0),),
        needs=("key",),
    )
    register_decoder(
        "best_of",
        best_of,
        knobs=("num_candidates", "temperature"),
        rows="num_candidates",
        nbest=True,
    )


@pytest.fixture(scope="module")
def user_code():
    with restored_tables():
        register_user_code()
        yield


# ----- through decode(...) -----

TRACES = {"n": 0}


def counting_step(params, carry, tokens):
    TRACES["n"] += 1  # runs only while tracing
    return markov_step(params, carry, tokens)


def test_banned_token_never_appears_and_its_knob_is_traced(user_code):
    v = 9
    table = markov_table(v, 2)
    table[:, 5] = table.max(axis=1) + 2.0  # 5 is every state's most probable token
    params = jnp.asarray(table)
    kw = dict(max_len=8, vocab_size=v, key=1, num_samples=64)
    for name in ("sample", "greedy"):
        free = decode(markov_step, params, jnp.zeros(1), cfg={"name": name}, **kw)
        banned = decode(markov_step, params, jnp.zeros(1), cfg={"name": name, "ban_token": 5}, **kw)
        assert (np.asarray(free.tokens) == 5).any(), name  # the test can fail
        assert not (np.asarray(banned.tokens) == 5).any(), name
    # a new value of a traced knob reuses the program; off (-1) is the program without the row
    call = dict(cfg={"name": "sample", "ban_token": 5}, **kw)
    decode(counting_step, params, jnp.zeros(1), **call)
    first = TRACES["n"]
    out = decode(counting_step, params, jnp.zeros(1), **{**call, "cfg": {"ban_token": 6}})
    assert TRACES["n"] == first and not (np.asarray(out.tokens) == 6).any()


def test_rows_run_in_the_table_order(user_code):
    order = render_order().split(" -> ")
    assert order.index("ban_token") == order.index("dry") + 1  # end of its stage
    assert order.index("random_drop") == order.index("xtc") + 1
    assert order[-1] == "mirostat"
    assert {"ban_token", "drop_prob"} <= set(registry.SPECS["sample"].knobs)
    assert "ban_token" in registry.SPECS["greedy"].knobs  # a penalty: greedy applies it
    assert "drop_prob" not in registry.SPECS["greedy"].knobs


def test_random_processor_rows_are_batch_invariant(user_code):
    """A row's draws come from its own (prompt, sample) key: decoding one prompt alone gives
    the tokens it had in the batch (keys taken from the batch position would not)."""
    params = lstm_params(eos_bias=-1.0)
    kw = dict(max_len=10, vocab_size=9, num_samples=3, key=jax.random.key(4))
    cfg = {"name": "sample", "drop_prob": 0.6}
    big = decode(lstm_step, params, lstm_carry(3), PROMPTS, PROMPT_LENGTHS, cfg=cfg, **kw)
    alone = decode(
        lstm_step, params, lstm_carry(1), PROMPTS[2:], PROMPT_LENGTHS[2:], prompt_ids=[2],
        cfg=cfg, **kw,
    )  # fmt: skip
    np.testing.assert_array_equal(np.asarray(alone.tokens[0]), np.asarray(big.tokens[2]))
    off = decode(lstm_step, params, lstm_carry(3), PROMPTS, PROMPT_LENGTHS, cfg={}, **kw)
    assert not np.array_equal(np.asarray(off.tokens), np.asarray(big.tokens))  # it acts
    # what it drops is gone from the distribution sampled: processed log-probs >= the model's
    gen = np.asarray(big.processed_logprobs) != 0
    assert (np.asarray(big.processed_logprobs)[gen] >= np.asarray(big.logprobs)[gen] - 1e-5).all()


def test_registrations_are_validated(user_code):
    knob = Knob("my_knob", float, 0.0, True, 0.0, 1.0, neutral=0.0)
    cases = [
        (dict(name="top_p", fn=ban, stage="truncation", knobs=(knob,)), "clashes"),
        (dict(name="mine", fn=ban, stage="warp", knobs=(knob,)), "stage='warp' is unknown"),
        (dict(name="mine", fn=ban, stage="penalty", knobs=(Knob("k2", float, 0.5),)), "neutral"),
        (dict(name="mine", fn=ban, stage="penalty", knobs=(knob,), needs=("cache",)), "needs"),
        (dict(name="mine", fn=ban, stage="penalty", knobs=(Knob("top_p", float, 1.0),)), "clash"),
    ]
    for kwargs, needle in cases:
        with pytest.raises(UserError, match=needle):
            register_processor(**kwargs)
    with pytest.raises(UserError, match="clashes"):
        register_decoder("beam", best_of, rows=1, nbest=True)
    with pytest.raises(UserError, match="rows"):
        register_decoder("mine", best_of, rows="no_such_knob", nbest=True)


def test_user_decoder_returns_the_samples_best_first(user_code):
    table = jnp.asarray(markov_table(9, 3))
    kw = dict(max_len=8, vocab_size=9, key=5, prompt_ids=[0, 1, 2])
    best = decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS,
                  cfg={"name": "best_of", "num_candidates": 6}, **kw)  # fmt: skip
    draws = decode(markov_step, table, jnp.zeros(3), PROMPTS, PROMPT_LENGTHS,
                   cfg={"name": "sample"}, num_samples=6, **kw)  # fmt: skip
    want = -np.sort(-np.asarray(draws.scores), axis=1)
    np.testing.assert_array_equal(np.asarray(best.scores), want)
    assert registry.score_unit({"name": "best_of"}) == "mean log-prob (nats per sequence)"
    assert registry.rows_per_prompt({"name": "best_of", "num_candidates": 6}, 1) == 6


# ----- through the Hydra config and run_experiment -----


@pytest.mark.slow  # trains or runs the pipeline: the full suite runs it
def test_user_extensions_through_the_config(user_code, cache_dir, tmp_path):
    from seqgen.experiment import run_experiment

    with pytest.raises(UserError, match="decoder.drop_prob"):
        validate_config(compose([*TINY, "decoder=sample", "decoder.drop_prob=1.5"]))
    compare = "compare=[{name:sample,ban_token:4,drop_prob:0.3},{name:best_of,num_candidates:4}]"
    cfg = compose([*TINY, compare])
    validate_config(cfg)
    run_experiment(cfg, out_dir=tmp_path)
    rows = [json.loads(x) for x in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert [r["decoder"]["name"] for r in rows] == ["sample", "best_of", "human"]
    samples = [json.loads(x) for x in (tmp_path / "samples.jsonl").read_text().splitlines()]
    sampled = [s for s in samples if s["decoder"] == rows[0]["decoder"]["label"]]
    assert len(sampled) == 8 and all(4 not in s["token_ids"] for s in sampled)
    best = [s for s in samples if s["decoder"] == rows[1]["decoder"]["label"]]
    assert len(best) == 1  # an n-best list: its best row is the generation
    assert rows[1]["metrics"]["score/mean"] == pytest.approx(best[0]["score"])
    # and as `decoder=NAME` with `decoder.<knob>=...`, like a built-in
    cfg = compose([*TINY, "decoder=best_of", "decoder.num_candidates=2"])
    validate_config(cfg)
    assert cfg.decoder.name == "best_of" and cfg.decoder.num_candidates == 2
