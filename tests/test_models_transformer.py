"""The causal Transformer: its KV-cache step equals its parallel forward, every decoder runs it
and scores exactly what the forward scores, beam search equals brute force, and it trains,
caches and decodes through the pipeline."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from types import SimpleNamespace as NS

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compose
from flax import nnx

from seqgen.decoding import decode
from seqgen.decoding.registry import BUILTIN, carry_len
from seqgen.errors import UserError
from seqgen.models import Transformer, make_init_carry_fn, make_step_fn
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

V, B, T = 6, 3, 7  # ids 3, 4, 5 are the symbols (UNK is not masked by a model)


def _model(**kw) -> Transformer:
    kw = {"hidden_size": 16, "num_layers": 2, "num_heads": 2, "context": 16, **kw}
    return Transformer(V, rngs=nnx.Rngs(0), **kw)


def _forward_logprobs(model: Transformer, rows: list[tuple[list[int], list[int], bool]]):
    """Per-token log-probs of each (prompt, seq, ended): seq's tokens given BOS + prompt, and
    EOS after it when `ended` (else 0), from ONE batched parallel forward pass."""
    width = max(len(p) + len(q) for p, q, _ in rows) + 1
    inputs = np.full((len(rows), width), PAD_ID, np.int32)
    targets = np.full((len(rows), width), EOS_ID, np.int32)
    for r, (p, q, _) in enumerate(rows):
        inputs[r, : len(p) + len(q) + 1] = [BOS_ID, *p, *q]
        targets[r, : len(p) + len(q)] = [*p, *q]
    lp = np.asarray(jax.nn.log_softmax(model(jnp.asarray(inputs)), axis=-1))
    picked = np.take_along_axis(lp, targets[..., None], axis=-1)[..., 0]  # [N, W]
    out = []
    for r, (p, q, ended) in enumerate(rows):
        n = len(p) + len(q)
        out.append((picked[r, len(p) : n], float(picked[r, n]) if ended else 0.0))
    return out


@pytest.mark.parametrize("positions, tie", [("learned", False), ("rope", True)])
def test_step_by_step_equals_forward(positions, tie):
    model = _model(positions=positions, tie_weights=tie, dropout=0.3)
    tokens = jax.random.randint(jax.random.key(0), (B, T), 0, V)
    full = model(tokens)  # [B, T, V]
    step_fn, params = make_step_fn(model)
    carry = make_init_carry_fn(model)(B, 9)  # the cache is the budget, not the context
    assert jax.tree.map(jnp.shape, carry)["kv"] == ((((B, 9, 2, 8),) * 2),) * 2
    steps = []
    for t in range(T):
        new, logits = jax.jit(step_fn)(params, carry, tokens[:, t])
        assert jax.tree.map(jnp.shape, new) == jax.tree.map(jnp.shape, carry)
        carry = new
        steps.append(logits)
    np.testing.assert_allclose(np.stack(steps, 1), full, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(carry["pos"]) == T)


def test_dropout_only_in_train_mode_and_causal():
    model = _model(dropout=0.5)
    tokens = jax.random.randint(jax.random.key(1), (B, T), 0, V)
    a = model(tokens)
    # causal: changing the last token leaves every earlier position's logits unchanged
    b = model(tokens.at[:, -1].set((tokens[:, -1] + 1) % V))
    np.testing.assert_array_equal(a[:, :-1], b[:, :-1])
    assert not np.allclose(a[:, -1], b[:, -1])
    model.train()
    c = model(tokens, rngs=jax.random.key(0))
    np.testing.assert_array_equal(c, model(tokens, rngs=jax.random.key(0)))
    assert not np.allclose(c, a)
    model.eval()
    np.testing.assert_array_equal(model(tokens), a)
    probs = jax.nn.softmax(a, axis=-1)
    assert np.all(probs[..., PAD_ID] == 0) and np.all(probs[..., BOS_ID] == 0)
    with pytest.raises(UserError, match="17 tokens is longer than model.context=16"):
        model(jnp.zeros((1, 17), jnp.int32))  # never silently clamped to the last position


@pytest.mark.parametrize(
    "fields, match",
    [
        ({"num_heads": 3}, "num_heads=3 must divide"),
        ({"positions": "alibi"}, "positions='alibi' is not allowed"),
        ({"positions": "rope", "hidden_size": 6, "num_heads": 2}, "even head size"),
    ],
)
def test_bad_fields_are_one_line(fields, match):
    with pytest.raises(UserError, match=match):
        _model(**fields)


PROMPTS = np.array([[4, 5], [3, 0], [0, 0]], np.int32)
PLENS = np.array([2, 1, 0], np.int32)
MAX_LEN = 4  # budgets of 2, 3, 4 generated tokens


def _run(model: Transformer, cfg: dict, **kw):
    step_fn, params = make_step_fn(model)
    init = make_init_carry_fn(model)(3, carry_len(cfg, MAX_LEN))  # contrastive: one step more
    out = decode(step_fn, params, init, PROMPTS, PLENS, cfg=NS(**cfg), max_len=MAX_LEN,
                 vocab_size=V, key=0, **kw)  # fmt: skip
    return jax.tree.map(np.asarray, out)


# one config per decoder; each returns rows whose log-probs we check against the forward
DECODER_CFGS = {
    "greedy": {"name": "greedy"},
    "sample": {"name": "sample", "top_k": 2},
    "beam": {"name": "beam", "beam_size": 3},
    "stochastic_beam": {"name": "stochastic_beam", "beam_size": 3},
    "diverse_beam": {"name": "diverse_beam", "beam_size": 4, "num_groups": 2},
    "exact": {"name": "exact", "beam_size": 2, "max_expansions": 64},
    "mbr": {"name": "mbr", "candidates": {"name": "sample"}, "num_candidates": 4},
    "contrastive": {"name": "contrastive", "top_k": 3},
}


@pytest.mark.slow  # several compiles: the full suite runs it
def test_every_decoder_scores_what_the_forward_scores():
    """Each decoder's per-token log-probs of what it returns equal the parallel forward's on
    the same tokens: the cache is right after beam's gathers, exact's pool and MBR's nesting."""
    assert set(DECODER_CFGS) == set(BUILTIN)  # every built-in decoder
    model = _model(positions="rope", num_layers=1)  # one layer: compiles faster, same cache
    for name, cfg in DECODER_CFGS.items():
        out = _run(model, cfg, num_samples=2)
        rows, where = [], []
        for i, k in itertools.product(range(3), range(out.tokens.shape[1])):
            if out.lengths[i, k] == 0 and not out.ended[i, k]:
                continue  # an empty beam slot
            plen, n = int(PLENS[i]), int(out.lengths[i, k])
            rows.append((PROMPTS[i, :plen].tolist(), out.tokens[i, k, plen:n].tolist(),
                         bool(out.ended[i, k])))  # fmt: skip
            where.append((i, k))
        for (i, k), (p, q, _), (want, want_eos) in zip(where, rows, _forward_logprobs(model, rows)):
            got = out.logprobs[i, k, len(p) : len(p) + len(q)]
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)
            np.testing.assert_allclose(out.eos_logprob[i, k], want_eos, rtol=1e-5, atol=1e-5)


def _brute_force(model: Transformer, prompt: list[int], max_len: int) -> list[tuple]:
    """Every continuation over the symbols 3, 4, 5 (EOS-ended within the budget, or cut at
    it), scored by the forward pass: [(log-prob, seq, ended)], best first."""
    budget = max_len - len(prompt)
    seqs = [list(q) for n in range(budget + 1) for q in itertools.product((3, 4, 5), repeat=n)]
    rows = [(prompt, q, len(q) < budget) for q in seqs]
    scored = _forward_logprobs(model, rows)
    cands = [(float(lps.sum()) + eos, q, ended) for (_, q, ended), (lps, eos) in zip(rows, scored)]
    return sorted(cands, key=lambda c: -c[0])


@pytest.mark.slow  # several compiles: the full suite runs it
def test_beam_and_exact_equal_brute_force_and_greedy_is_sample_t0():
    model = _model(positions="learned")
    # K = 128 holds every hypothesis: 40 EOS-ended and 81 cut ones for the empty prompt
    out = _run(model, {"name": "beam", "beam_size": 128, "length_penalty": "none"})
    mode = _run(model, {"name": "exact", "beam_size": 2, "max_expansions": 200})
    for i, plen in enumerate(PLENS):
        cands = _brute_force(model, PROMPTS[i, :plen].tolist(), MAX_LEN)
        np.testing.assert_allclose(
            out.scores[i, : len(cands)], [c[0] for c in cands], rtol=1e-5, atol=1e-5
        )
        assert np.all(out.scores[i, len(cands) :] < -1e6)  # through masked PAD / BOS
        best = max(c[0] for c in cands if c[2])  # exact: the best EOS-ended continuation
        assert mode.proven[i]
        np.testing.assert_allclose(mode.scores[i, 0], best, rtol=1e-5, atol=1e-5)
    greedy = _run(model, {"name": "greedy"})
    sampled = _run(model, {"name": "sample", "temperature": 0.0})
    np.testing.assert_array_equal(greedy.tokens, sampled.tokens)
    np.testing.assert_array_equal(greedy.logprobs, sampled.logprobs)


@pytest.mark.slow  # several compiles: the full suite runs it
def test_trains_caches_and_decodes_through_the_pipeline(cache_dir, tmp_path):
    from seqgen.experiment import run_experiment

    overrides = [*TINY, "model=transformer", "model.hidden_size=16", "model.num_heads=2"]
    cfg = compose([*overrides, "model.context=64"])  # train=tiny: seq_len 64
    res = run_experiment(cfg, tmp_path / "run")
    info = json.loads((tmp_path / "run" / "metrics.json").read_text())["model"]
    entry = json.loads((Path(info["cache_dir"]) / "meta.json").read_text())
    assert entry["model"] == {
        "cell": "transformer",
        "hidden_size": 16,
        "num_layers": 1,
        "num_heads": 2,
        "dropout": 0.1,
        "tie_weights": False,
        "positions": "learned",
        "context": 64,
    }
    assert res["metrics"]["ppl/valid"] < 8  # learned: uniform over the 8 predictable ids is 8
    # the cache entry loads back from disk (orbax) into the same parameters
    from seqgen.data.corpus import load_corpus
    from seqgen.model_store import _LOADED, load_model_dir

    loaded = load_model_dir(Path(info["cache_dir"]), load_corpus(cfg.data, 0), "test")
    trained = _LOADED[info["cache_dir"]].params
    for a, b in zip(jax.tree.leaves(loaded.params), jax.tree.leaves(trained), strict=True):
        np.testing.assert_array_equal(a, b)
    labels = [r["decoder"]["label"] for r in res["results"]]
    assert len(labels) == len(cfg.compare) + 1  # every decoder of the default set, then human
    from seqgen.config import validate_config

    validate_config(cfg)
    with pytest.raises(UserError, match=r"decode.max_len=65 is longer than model.context=64"):
        validate_config(compose([*overrides, "model.context=64", "decode.max_len=65"]))
    with pytest.raises(UserError, match=r"train.seq_len=64 is longer than model.context=63"):
        validate_config(compose([*overrides, "model.context=63"]))
