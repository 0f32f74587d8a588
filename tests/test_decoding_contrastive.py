"""Contrastive search (Su et al. 2022): token for token against a brute-force NumPy
implementation of the rule that recomputes every hidden state from scratch, on a 2-layer LSTM
and on the Transformer; penalty_alpha=0 is greedy; a model without hidden states is refused
in one line; the pipeline and `Model.generate` run it."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import TINY, compose, read_samples
from flax import nnx

import seqgen
from seqgen.config import validate_config
from seqgen.decoding import decode
from seqgen.errors import UserError
from seqgen.models import LanguageModel, Transformer, make_init_carry_fn, make_step_fn
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

V, MAX_LEN, K = 10, 9, 3
PROMPTS = np.array([[4, 5, 6], [7, PAD_ID, PAD_ID], [8, 4, PAD_ID]], np.int32)
PROMPT_LENGTHS = np.array([3, 1, 0], np.int32)


def _models() -> dict:
    """A 2-layer LSTM whose rows end at EOS early, a GRU and a Transformer whose rows run to
    max_len (a text stream's models: EOS never predicted)."""
    lstm = LanguageModel(V, embed_size=8, hidden_size=12, num_layers=2, rngs=nnx.Rngs(1))
    gru = LanguageModel(V, cell="gru", embed_size=8, hidden_size=12, num_layers=2,
                        predict_eos=False, rngs=nnx.Rngs(3))  # fmt: skip
    tf = Transformer(V, hidden_size=16, num_layers=2, num_heads=2, context=16, predict_eos=False,
                     rngs=nnx.Rngs(2))  # fmt: skip
    return {"lstm": lstm, "gru": gru, "transformer": tf}


MODELS = _models()
STEPS = {name: make_step_fn(m) for name, m in MODELS.items()}  # one step_fn object each
INITS = {name: make_init_carry_fn(m) for name, m in MODELS.items()}
# the same step, batch 1, for the reference (one compile per model)
HIDDEN_1 = {name: jax.jit(step.hidden) for name, (step, _) in STEPS.items()}


def _run(name: str, cfg: dict):
    step, params = STEPS[name]
    carry = INITS[name](len(PROMPTS), MAX_LEN + 1)  # contrastive feeds one step past max_len
    return decode(
        step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=cfg, max_len=MAX_LEN, vocab_size=V
    )


def _feed(name: str, tokens: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Hidden states [n, D] and logits [n, V] after each of BOS + tokens, from a fresh carry."""
    _, params = STEPS[name]
    carry = INITS[name](1, MAX_LEN + 1)
    hs, ls = [], []
    for tok in [BOS_ID, *tokens]:
        carry, h, logits = HIDDEN_1[name](params, carry, jnp.array([tok], jnp.int32))
        hs.append(np.asarray(h[0], np.float64))
        ls.append(np.asarray(logits[0], np.float64))
    return np.stack(hs), np.stack(ls)


def _cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (max(np.linalg.norm(a), 1e-12) * max(np.linalg.norm(b), 1e-12)))


def brute_force(name: str, prompt: list[int], k: int, alpha: float) -> list[int]:
    """Su et al.'s rule, step by step, every hidden state recomputed from BOS (float64)."""
    seq = list(prompt)
    while len(seq) < MAX_LEN:
        hs, ls = _feed(name, seq)  # hs[j]: the state after BOS + seq[:j]
        logits = ls[-1]
        p = np.exp(logits - logits.max())
        p /= p.sum()
        order = sorted(range(V), key=lambda v: (-p[v], v))[:k]  # ties: the lower id
        best, best_score = None, -np.inf
        for v in order:
            h_v = _feed(name, [*seq, v])[0][-1]
            penalty = max(_cos(h_v, h_j) for h_j in hs)
            score = (1 - alpha) * p[v] - alpha * penalty if p[v] > 0 else -np.inf
            if score > best_score:
                best, best_score = v, score
        seq.append(best)
        if best == EOS_ID:
            break
    return seq


def _rows(out) -> list[list[int]]:
    """Each row's tokens up to and including EOS (prompt first)."""
    rows = []
    for toks, length, ended in zip(out.tokens[:, 0], out.lengths[:, 0], out.ended[:, 0]):
        rows.append([int(x) for x in toks[: int(length) + int(bool(ended))]])
    return rows


@pytest.mark.parametrize("name", ["lstm", "gru", "transformer"])
def test_contrastive_equals_brute_force(name):
    alpha = 0.6
    out = _run(name, {"name": "contrastive", "top_k": K, "penalty_alpha": alpha})
    want = [
        brute_force(name, [int(x) for x in p[:n]], K, alpha)
        for p, n in zip(PROMPTS, PROMPT_LENGTHS)
    ]
    assert _rows(out) == want
    assert [len(w) == MAX_LEN for w in want] == ([False] * 3 if name == "lstm" else [True] * 3)
    # the score is the model's log-prob of the returned tokens (prompt excluded, EOS included)
    for row, seq, n in zip(np.asarray(out.scores[:, 0]), want, PROMPT_LENGTHS):
        _, ls = _feed(name, seq)
        m = ls.max(-1, keepdims=True)
        lp = ls - m - np.log(np.exp(ls - m).sum(-1, keepdims=True))
        expected = sum(lp[j, seq[j]] for j in range(int(n), len(seq)))
        np.testing.assert_allclose(row, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("name", ["lstm", "transformer"])
def test_penalty_alpha_zero_is_greedy(name):
    got = _run(name, {"name": "contrastive", "top_k": 4, "penalty_alpha": 0.0})
    greedy = _run(name, {"name": "greedy"})
    np.testing.assert_array_equal(got.tokens, greedy.tokens)
    np.testing.assert_array_equal(got.lengths, greedy.lengths)
    np.testing.assert_allclose(got.scores, greedy.scores, rtol=1e-6)


@pytest.mark.parametrize("loop", ["masked", "while"])
def test_every_loop_variant_gives_the_same_outputs(loop):
    cfg = {"name": "contrastive", "top_k": K, "penalty_alpha": 0.6}
    step, params = STEPS["lstm"]
    carry = INITS["lstm"](len(PROMPTS), MAX_LEN + 1)
    got = decode(step, params, carry, PROMPTS, PROMPT_LENGTHS, cfg=cfg, max_len=MAX_LEN,
                 vocab_size=V, loop=loop)  # fmt: skip
    want = _run("lstm", cfg)
    for field in ("tokens", "lengths", "ended", "logprobs", "scores"):
        np.testing.assert_array_equal(getattr(got, field), getattr(want, field), err_msg=field)


def test_a_step_function_without_hidden_states_is_refused():
    def plain(params, carry, tokens):  # no `.hidden` attached
        return carry, params[tokens]

    table = jnp.zeros((V, V))
    with pytest.raises(UserError, match="needs the model's hidden states"):
        decode(plain, table, jnp.zeros((1, 1)), cfg={"name": "contrastive", "top_k": 2}, max_len=4,
               vocab_size=V)  # fmt: skip


def test_config_rules():
    validate_config(compose(["decoder=contrastive", "decoder.penalty_alpha=0.3"]))
    validate_config(compose(["decoder=contrastive", "model=transformer", "decode.max_len=255"]))
    refused = {
        "decoder.top_k=0": "allowed: an integer >= 1",
        "decoder.penalty_alpha=1.5": "out of range",
    }
    for override, msg in refused.items():
        with pytest.raises(UserError, match=msg):
            validate_config(compose(["decoder=contrastive", override]))
    with pytest.raises(UserError, match="model.cell=oracle does not provide"):
        validate_config(compose(["decoder=contrastive", "data=synthetic", "model=oracle"]))
    with pytest.raises(UserError, match="one step past decode.max_len: decode.max_len=257"):
        validate_config(compose(["decoder=contrastive", "model=transformer"]))
    with pytest.raises(UserError, match="penalty_alpha=0.3 is not read by decoder greedy"):
        validate_config(compose(["decoder=greedy", "decoder.penalty_alpha=0.3"]))


def test_the_experiment_composes():
    cfg = compose(["+experiment=contrastive", "data.path=/nonexistent/tinyshakespeare.txt"])
    validate_config(cfg)
    names = [d["name"] for d in cfg.compare]
    assert "contrastive" in names and "greedy" in names and "beam" in names


@pytest.mark.slow
def test_run_and_generate(cache_dir, tmp_path):
    """The pipeline (what `python -m seqgen.run decoder=contrastive` runs) and
    `Model.generate(decoder="contrastive")` give the same tokens."""
    overrides = [*TINY, "decoder=contrastive", "decoder.top_k=3", "decode.prompts=[ab,c]"]
    seqgen.run(overrides, out_dir=tmp_path)
    run_tokens = [r["token_ids"] for r in read_samples(tmp_path)]
    model = seqgen.load(tmp_path)
    out = model.generate(["ab", "c"], decoder="contrastive", top_k=3)
    assert [list(map(int, t)) for t in out.token_ids] == run_tokens
    greedy = model.generate(["ab", "c"], decoder="contrastive", top_k=3, penalty_alpha=0.0)
    assert (
        greedy.token_ids[0].tolist()
        == model.generate(["ab"], decoder="greedy").token_ids[0].tolist()
    )
