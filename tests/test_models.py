"""LanguageModel: step-by-step equals teacher forcing, recurrences equal the NNX cells, sizes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from seqgen.errors import UserError
from seqgen.models import LanguageModel, count_params, make_init_carry_fn, make_step_fn
from seqgen.models.lm import _RECURRENCES
from seqgen.tokens import BOS_ID, EOS_ID, PAD_ID

V, B, T = 11, 3, 7


def _tokens(seed=0):
    return jax.random.randint(jax.random.key(seed), (B, T), 0, V)


def _model(cell, **kw):
    kw = {"embed_size": 8, "hidden_size": 16, "num_layers": 2, "dropout": 0.2, **kw}
    return LanguageModel(V, cell=cell, rngs=nnx.Rngs(0), **kw)


@pytest.mark.parametrize("one_hot", [False, True])
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_step_by_step_equals_forward(cell, one_hot):
    model = _model(cell, one_hot_input=one_hot)
    tokens = _tokens()
    full = model(tokens)  # [B, T, V]
    assert full.shape == (B, T, V)
    carry = model.init_carry(B)
    steps = []
    for t in range(T):
        carry, logits = model.step(carry, tokens[:, t])
        steps.append(logits)
    np.testing.assert_allclose(np.stack(steps, 1), full, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrence_matches_nnx_cell(cell):
    model = _model(cell, num_layers=1, one_hot_input=True)
    c = model.cells[0]
    key = jax.random.key(1)
    x = jax.random.normal(key, (B, V))
    carry = jax.tree.map(lambda z: z + 0.3, model.init_carry(B)[0])
    ref_carry, ref_out = c(carry, x)
    proj = x @ c.dense_i.kernel[...] + (0 if c.dense_i.bias is None else c.dense_i.bias[...])
    got_carry, got_out = _RECURRENCES[cell](c, carry, proj)
    np.testing.assert_allclose(got_out, ref_out, rtol=1e-6, atol=1e-6)
    for a, b in zip(jax.tree.leaves(got_carry), jax.tree.leaves(ref_carry)):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)


def test_folk_rnn_parameter_count():
    # folk-rnn (Sturm et al. 2016): 3x512 LSTM, one-hot input over 137 tokens, no peepholes.
    # 4*(137*512 + 512*512 + 512) + 2 * 4*(2*512*512 + 512) + (512*137 + 137) = 5,599,881
    model = nnx.eval_shape(
        lambda: LanguageModel(
            137, cell="lstm", hidden_size=512, num_layers=3, one_hot_input=True, rngs=nnx.Rngs(0)
        )
    )
    assert count_params(model) == 5_599_881


def test_tied_weights_share_the_embedding():
    model = _model("gru", embed_size=16, tie_weights=True)
    untied = _model("gru", embed_size=16)
    emb = V * 16
    head = 16 * V + V
    assert count_params(untied) - count_params(model) == head - V  # only the head bias remains
    assert count_params(model) > emb


def test_tied_weights_size_mismatch_is_user_error():
    with pytest.raises(UserError, match=r"model\.embed_size == model\.hidden_size \(got 8"):
        _model("lstm", embed_size=8, hidden_size=16, tie_weights=True)


def test_unknown_cell_is_user_error():
    with pytest.raises(UserError, match="allowed: rnn, lstm, gru"):
        _model("transformer")


def test_dropout_only_in_train_mode():
    model = _model("lstm", dropout=0.5)
    tokens = _tokens()
    a, b = model(tokens), model(tokens)
    np.testing.assert_array_equal(a, b)
    model.train()
    c = model(tokens, rngs=jax.random.key(0))
    d = model(tokens, rngs=jax.random.key(0))
    e = model(tokens, rngs=jax.random.key(1))
    np.testing.assert_array_equal(c, d)  # explicit key -> reproducible
    assert not np.allclose(c, a) and not np.allclose(c, e)
    model.eval()
    np.testing.assert_array_equal(model(tokens), a)


def test_make_step_fn_is_pure_and_jittable():
    model = _model("lstm")
    model.train()
    step_fn, params = make_step_fn(model)  # decoding always runs in eval mode
    tokens = _tokens()
    init_carry = make_init_carry_fn(model)
    carry = init_carry(B)
    jstep = jax.jit(step_fn)
    outs = []
    for t in range(T):
        new_carry, logits = jstep(params, carry, tokens[:, t])
        assert jax.tree.map(jnp.shape, new_carry) == jax.tree.map(jnp.shape, carry)
        carry = new_carry
        outs.append(logits)
    np.testing.assert_allclose(np.stack(outs, 1), model(tokens), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("tie", [False, True])
def test_pad_and_bos_are_never_predicted(tie):
    model = _model("gru", embed_size=16, tie_weights=tie)
    tokens = _tokens()
    probs = jax.nn.softmax(model(tokens), axis=-1)
    assert np.all(probs[..., PAD_ID] == 0) and np.all(probs[..., BOS_ID] == 0)
    assert np.all(probs[..., EOS_ID] > 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, rtol=1e-5)
    _, logits = model.step(model.init_carry(B), tokens[:, 0])
    assert np.all(np.isfinite(jax.nn.log_softmax(logits)))


def test_step_params_are_exactly_the_parameters():
    model = _model("rnn", dropout=0.3)
    _, params = make_step_fn(model)
    assert sum(x.size for x in jax.tree.leaves(params)) == count_params(model)
    assert all(jnp.issubdtype(x.dtype, jnp.floating) for x in jax.tree.leaves(params))
