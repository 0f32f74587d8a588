"""Classifier-free guidance (`seqgen.decoding.guidance`): the guided step is Sanchez et al.'s
formula on hand-computed logits, with the unconditional stream aligned to the prompt;
guidance_scale=1 is the unguided decode bit for bit; every decoder that takes guidance returns
the guided log-probs of what it returns, on an LSTM and on the Transformer; the unconditional
contexts drop the folk header or the whole prompt; the knob runs through the pipeline."""

from __future__ import annotations

import json
from dataclasses import replace
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, read_samples, run_cli
from helpers_decoding import log_softmax64, lstm_carry, lstm_params, lstm_step

import seqgen
from seqgen.decoding import guidance, registry
from seqgen.decoding.common import DecodeRequest, prepare
from seqgen.errors import UserError
from seqgen.tokens import BOS_ID

V = 9
PROMPTS = np.array([[4, 5, 6], [7, 0, 0], [0, 0, 0]], np.int32)
PLENS = np.array([3, 1, 0], np.int32)
CONTEXT = np.array([[6], [0], [0]], np.int32)  # row 0 drops its "header" 4 5
CLENS = np.array([1, 0, 0], np.int32)
MAX_LEN = 6


def sum_step(params, carry, tokens):
    """A toy model whose logits depend on the whole history: the sum of the tokens read."""
    carry = carry + tokens
    return carry, params[carry % params.shape[0]]


def test_guided_step_is_the_formula_with_the_streams_aligned():
    """Prompt [2, 3], unconditional context [3] (m = 1 <= p = 2): the unconditional stream
    waits one call, reads BOS then 3, so both streams have read their contexts at call 2;
    logits before that are the conditional ones, after it log_softmax(u) + gamma *
    (log_softmax(c) - log_softmax(u)), computed here by hand from the table rows."""
    table = np.random.default_rng(0).normal(size=(5, 7)).astype(np.float32)
    step = guidance.guided_step(sum_step)
    assert guidance.guided_step(sum_step) is step  # one object: compiled programs are reused
    gamma = 2.5
    carry = guidance.GuidedCarry(
        cond=jnp.zeros(1, jnp.int32),
        uncond=jnp.zeros(1, jnp.int32),
        context=jnp.array([[3]], jnp.int32),
        length=jnp.array([1], jnp.int32),
        wait=jnp.array([1], jnp.int32),
        calls=jnp.zeros(1, jnp.int32),
    )
    ls = log_softmax64(table)  # [5, 7]
    # (token fed, cond sum, uncond sum, expected logits): sums by hand, rows = sum % 5
    script = [
        (BOS_ID, 1, 0, table[1]),  # unconditional stream waiting
        (2, 3, 1, table[3]),  # it reads BOS; not yet its context
        (3, 6, 4, ls[4] + gamma * (ls[1] - ls[4])),  # it reads 3: both contexts read
        (4, 10, 8, ls[3] + gamma * (ls[0] - ls[3])),  # a generated token, read by both
    ]
    params = (jnp.asarray(table), jnp.float32(gamma))
    for tok, cond_sum, uncond_sum, want in script:
        carry, logits = step(params, carry, jnp.array([tok], jnp.int32))
        assert (int(carry.cond[0]), int(carry.uncond[0])) == (cond_sum, uncond_sum)
        np.testing.assert_allclose(np.asarray(logits[0]), want, rtol=1e-5, atol=1e-5)
    u, c = ls[3], ls[0]  # gamma = 0 is the unconditional model, gamma = 1 the conditional one
    np.testing.assert_allclose(guidance.combine(jnp.asarray(table[0]), table[3], 0.0), u, 1e-5)
    np.testing.assert_allclose(guidance.combine(jnp.asarray(table[0]), table[3], 1.0), c, 1e-5)


def _request(cfg: dict, ctx=CONTEXT, clens=CLENS, **kw) -> DecodeRequest:
    return DecodeRequest(
        lstm_step,
        lstm_params(V),
        lstm_carry(3),
        PROMPTS,
        PLENS,
        max_len=MAX_LEN,
        vocab_size=V,
        cfg=NS(**cfg),
        key=0,
        num_samples=2,
        guidance_prompts=ctx,
        guidance_lengths=clens,
        **kw,
    )


def _decode(req: DecodeRequest):
    """`decode()`'s entry path (`registry.run`) for a whole request, outputs on the host."""
    return jax.tree.map(np.asarray, registry.run(req.cfg.name, req))


GUIDED = {
    "greedy": {"name": "greedy"},
    "sample": {"name": "sample", "top_k": 4},
    "beam": {"name": "beam", "beam_size": 3},
    "stochastic_beam": {"name": "stochastic_beam", "beam_size": 2},
    "diverse_beam": {"name": "diverse_beam", "beam_size": 4, "num_groups": 2},
}


def test_the_registry_says_which_decoders_take_guidance():
    assert {n for n, s in registry.SPECS.items() if s.guidance} == set(GUIDED)
    for name in set(registry.BUILTIN) - set(GUIDED):
        with pytest.raises(UserError, match=rf"guidance_scale=2.0 is not supported by .*{name}"):
            registry.validate_decoder({"name": name, "guidance_scale": 2.0})
    assert registry.label({"name": "beam", "guidance_scale": 2.0}).endswith("guidance_scale=2.0)")


@pytest.mark.parametrize("name", ["sample", "beam"])
def test_guidance_scale_one_is_unguided_bit_for_bit(name):
    """The guided program itself (both streams, the combinator) at gamma = 1 returns exactly
    the unguided decode: tokens, log-probs and scores."""
    cfg = {**GUIDED[name], "guidance_scale": 1.0}
    req = _request(cfg)
    row = registry.SPECS[name]
    prep = prepare(req, num_samples=2 if row.rows is None else 1, keyed=row.keyed)
    forced = jax.tree.map(np.asarray, row.fn(guidance.guide(req, prep), prep))
    plain = _decode(_request(GUIDED[name]))
    for field in ("tokens", "lengths", "logprobs", "scores", "ended"):
        np.testing.assert_array_equal(getattr(forced, field), getattr(plain, field), field)


def _lstm_logprobs(tokens: list[int]) -> np.ndarray:
    """log p(. | BOS, tokens[:k]) for k = 0..len(tokens) under the helpers' LSTM, [K+1, V]."""
    params, carry, out = lstm_params(V), lstm_carry(1), []
    for tok in [BOS_ID, *tokens]:
        carry, logits = lstm_step(params, carry, jnp.array([tok]))
        out.append(log_softmax64(np.asarray(logits[0])))
    return np.stack(out)


def _guided_logits(lp_fn, prompt, ctx, seq, gamma) -> np.ndarray:
    """u + gamma (c - u) before each token of `seq` [n, V], from scratch: c after BOS, the
    prompt and seq's earlier tokens, u after BOS, the context and the same tokens."""
    n = len(seq)
    c = lp_fn([*prompt, *seq])[len(prompt) : len(prompt) + n]
    u = lp_fn([*ctx, *seq])[len(ctx) : len(ctx) + n]
    return u + gamma * (c - u)


def _check_every_decoder(run, lp_fn, gamma, names=tuple(GUIDED)):
    for name in names:
        cfg = GUIDED[name]
        out = run({**cfg, "guidance_scale": gamma})
        for i, k in np.ndindex(*out.lengths.shape):
            if out.lengths[i, k] == 0 and not out.ended[i, k]:
                continue  # an empty beam slot
            p, n = int(PLENS[i]), int(out.lengths[i, k])
            seq = out.tokens[i, k, p:n].tolist()
            g = _guided_logits(lp_fn, PROMPTS[i, :p], CONTEXT[i, : CLENS[i]], seq, gamma)
            want = np.take_along_axis(log_softmax64(g), np.array(seq, np.int64)[:, None], axis=1)[
                :, 0
            ]
            got = out.logprobs[i, k, p:n]
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4, err_msg=name)
            if name == "greedy":  # and each token is the guided argmax
                assert seq == np.argmax(g, axis=1).tolist()


@pytest.mark.slow  # one compile per decoder; fast: gamma = 1 (sample, beam), the hand step
def test_every_guided_decoder_returns_the_guided_logprobs_lstm():
    """Each decoder that takes guidance, on an LSTM: the log-prob of every token it returns is
    log_softmax(u + gamma (c - u)) recomputed from scratch (the conditional stream after the
    prompt, the unconditional one after its context): the streams stay aligned through
    beam gathers, repeats and prompts of different lengths."""

    def run(cfg):
        return _decode(_request(cfg))

    _check_every_decoder(run, _lstm_logprobs, 2.0)
    plain = run(GUIDED["greedy"])
    guided = run({**GUIDED["greedy"], "guidance_scale": 3.0})
    assert not np.array_equal(plain.tokens, guided.tokens)  # gamma moves the argmax here


@pytest.mark.slow  # several compiles: the full suite runs it
def test_every_guided_decoder_returns_the_guided_logprobs_transformer():
    from flax import nnx

    from seqgen.models import Transformer, make_init_carry_fn, make_step_fn

    model = Transformer(V, hidden_size=16, num_layers=1, num_heads=2, context=8, rngs=nnx.Rngs(0))
    step_fn, params = make_step_fn(model)
    init = make_init_carry_fn(model)(3, MAX_LEN)

    def lp_fn(tokens):  # one parallel forward: the step-by-step decode is what is tested
        return log_softmax64(np.asarray(model(jnp.asarray([[BOS_ID, *tokens]], jnp.int32))[0]))

    def run(cfg):
        return _decode(replace(_request(cfg), step_fn=step_fn, params=params, init_carry=init))

    # the sampler's repeated rows and beam's gathers of the KV cache (the LSTM test runs all)
    _check_every_decoder(run, lp_fn, 1.5, ("sample", "beam"))


def test_bad_contexts_are_one_line():
    on = {"name": "greedy", "guidance_scale": 2.0}
    with pytest.raises(UserError, match="longer than its prompt"):
        _decode(_request(on, ctx=PROMPTS, clens=np.array([1, 2, 0])))  # row 1: p = 1
    with pytest.raises(UserError, match="guidance_prompts has shape"):
        _decode(_request(on, ctx=CONTEXT[:2]))
    with pytest.raises(UserError, match=r"decoder.guidance_scale=-1.0 is out of range"):
        _decode(_request({"name": "greedy", "guidance_scale": -1.0}))


def _ids(text: str) -> np.ndarray:
    return np.array([ord(c) for c in text], np.int32)


def test_unconditional_contexts_drop_the_folk_header_or_the_prompt():
    from seqgen.prompts import unconditional_contexts

    def vocab(level):
        return NS(level=level, decode_symbols=lambda ids: [chr(i) for i in ids])

    folk = NS(name="folk", vocab=vocab("char"))
    tune, bare = _ids("M:6/8\nL:1/8\nK:Gmin\nB/2-A/2 | G>FD C"), _ids("GAB")
    got = unconditional_contexts(folk, [tune, bare])
    assert "".join(map(chr, got[0])) == "B/2-A/2 | G>FD C"  # the M:, L:, K: lines dropped
    assert got[1].tolist() == bare.tolist()  # no header: nothing to drop
    abc = NS(name="folk", vocab=NS(level="abc", decode_symbols=lambda ids: SYMBOLS[ids].tolist()))
    assert unconditional_contexts(abc, [np.arange(5)])[0].tolist() == [3, 4]  # after K:G
    text = NS(name="text", vocab=vocab("char"))
    assert [len(c) for c in unconditional_contexts(text, [tune, bare])] == [0, 0]


SYMBOLS = np.array(["M:6/8", "L:1/8", "K:G", "G", "A"])


@pytest.mark.slow
def test_guidance_runs_from_the_python_api_and_the_cli_on_rnn_and_transformer(cache_dir, tmp_path):
    """An LSTM run through `seqgen.run` and `seqgen.load(...).generate`, a Transformer run
    through `python -m seqgen.run`: both guided, and the API gives the run's tokens."""
    guided = ["decoder=greedy", "decoder.guidance_scale=2.0", "decode.prompts=[ab,c]"]
    seqgen.run([*TINY, *guided], out_dir=tmp_path / "rnn")
    rows = read_samples(tmp_path / "rnn")
    assert rows[0]["decoder"] == "greedy(guidance_scale=2.0)"
    model = seqgen.load(tmp_path / "rnn")
    again = model.generate(["ab", "c"], decoder="greedy", guidance_scale=2.0, max_len=16)
    assert [list(map(int, t)) for t in again.token_ids] == [r["token_ids"] for r in rows]
    with pytest.raises(UserError, match="guidance_scale=2.0 is not supported by decoder exact"):
        model.generate(["ab"], decoder="exact", guidance_scale=2.0)
    tf = ["model=transformer", "model.hidden_size=16", "model.num_heads=2", "model.context=64"]
    proc = run_cli([*TINY, *tf, "decoder=beam", "decoder.guidance_scale=1.5",
                    f"hydra.run.dir={tmp_path / 'tf'}"], cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "tf" / "results.jsonl").read_text().splitlines()[0])
    assert result["decoder"]["guidance_scale"] == 1.5 and result["metrics"]["gen/ppl"] >= 1
