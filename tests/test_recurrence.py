"""The hand-written backwards of the recurrences (per layer and wavefront) equal autodiff's."""

import jax
import numpy as np
import pytest
from flax import nnx

from seqgen.data.batching import make_stream_examples
from seqgen.models import LanguageModel
from seqgen.models.lm import _GATES, _RECURRENCES
from seqgen.models.recurrence import scan_layer
from seqgen.models.wavefront import stack_weights, wavefront
from seqgen.tokens import BOS_ID, NUM_SPECIAL, PAD_ID
from seqgen.train import batch_loss

V, B, T = 12, 3, 9


def _batch():
    """Stream windows (BOS marks each window's fresh carry), the last one padded."""
    rng = np.random.default_rng(0)
    stream = rng.integers(NUM_SPECIAL, V, size=B * T - 4).astype(np.int32)
    examples = make_stream_examples([stream], T)
    inputs = np.full((B, T), PAD_ID, np.int32)
    targets = np.full((B, T), PAD_ID, np.int32)
    mask = np.zeros((B, T), np.float32)
    for row, (x, y) in enumerate(examples):
        inputs[row, : len(x)], targets[row, : len(y)], mask[row, : len(y)] = x, y, 1.0
    assert (inputs[:, 0] == BOS_ID).all() and mask[-1, -1] == 0.0
    return inputs, targets, mask


def _grads(model, backward, key):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    batch = _batch()

    def loss_fn(p):
        return batch_loss(nnx.merge(graphdef, p, rest), batch, key, backward)

    return jax.jit(jax.value_and_grad(loss_fn))(params)


_PER_LAYER = [
    ("rnn", 1, 0.0),
    ("rnn", 2, 0.3),
    ("lstm", 1, 0.0),
    ("lstm", 2, 0.3),
    ("lstm", 2, 0.0),
    ("gru", 1, 0.0),
    ("gru", 2, 0.3),
]
# the wavefront's idle first steps and unused last ones matter from 2 layers, its in-loop input
# projections and dropout from 2, its middle layers from 3
_WAVEFRONT = [("rnn", 2, 0.3), ("lstm", 1, 0.0), ("lstm", 3, 0.3), ("gru", 3, 0.3)]


_CASES = [(*case, "fused") for case in _PER_LAYER] + [
    (*case, b) for case in _WAVEFRONT for b in ("wavefront", "wavefront_fused")
]
# one case of each backward in `pytest -m "not slow"`; the full suite runs them all
_FAST = {
    ("lstm", 2, 0.3, "fused"),
    ("lstm", 3, 0.3, "wavefront"),
    ("gru", 3, 0.3, "wavefront_fused"),
}


@pytest.mark.parametrize(
    "cell,num_layers,dropout,backward",
    [c if c in _FAST else pytest.param(*c, marks=pytest.mark.slow) for c in _CASES],
)
def test_backward_equals_autodiff(cell, num_layers, dropout, backward):
    model = LanguageModel(
        V, cell=cell, embed_size=8, hidden_size=16, num_layers=num_layers, dropout=dropout,
        rngs=nnx.Rngs(0),
    )  # fmt: skip
    model.train()
    key = jax.random.key(1)
    loss_f, grads_f = _grads(model, backward, key)
    loss_a, grads_a = _grads(model, "autodiff", key)
    # the same function, computed within another program: equal up to float32 rounding
    np.testing.assert_allclose(float(loss_f), float(loss_a), rtol=1e-6)
    flat_a = dict(nnx.to_flat_state(grads_a))
    for path, g in nnx.to_flat_state(grads_f):
        a = np.asarray(flat_a[path][...])
        assert np.abs(a).max() > 0, path  # every parameter gets a gradient to compare
        np.testing.assert_allclose(np.asarray(g[...]), a, rtol=1e-5, atol=1e-6 * np.abs(a).max())


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_fused_backward_of_the_initial_carry(cell):
    """The carry's gradient, which the model (zero carry) never uses, against autodiff's."""
    model = LanguageModel(V, cell=cell, embed_size=8, hidden_size=16, rngs=nnx.Rngs(0))
    c = model.cells[0]
    rng = np.random.default_rng(1)
    xs = rng.normal(size=(T, B, model.cells[0].dense_h.kernel.shape[1])).astype(np.float32)
    carry0 = jax.tree.map(lambda z: z + rng.normal(size=z.shape), model.init_carry(B)[0])
    weights = jax.random.normal(jax.random.key(2), (T, B, 16))

    def loss(carry0, xs, backward):
        hs = scan_layer(_RECURRENCES[cell], cell, c, carry0, xs, backward)
        return (hs * weights).sum()

    for f, a in zip(
        jax.grad(loss, (0, 1))(carry0, xs, "fused"),
        jax.grad(loss, (0, 1))(carry0, xs, "autodiff"),
        strict=True,
    ):
        for x, y in zip(jax.tree.leaves(f), jax.tree.leaves(a), strict=True):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())


@pytest.mark.slow  # several compiles: the full suite runs it
@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_wavefront_backward_of_the_initial_carry_and_inputs(cell):
    """wavefront_fused's gradients of a random initial carry, inputs and weights, with dropout
    masks, against autodiff of the same wavefront (checked against per-layer autodiff above)."""
    model = LanguageModel(
        V, cell=cell, embed_size=8, hidden_size=16, num_layers=3, rngs=nnx.Rngs(0)
    )
    rng = np.random.default_rng(1)
    w = stack_weights(model.cells)
    xs = rng.normal(size=(T, B, w.wh.shape[-1])).astype(np.float32)
    keep = (rng.random((2, T, B, 16)) < 0.7).astype(np.float32) / 0.7
    carry0 = jax.tree.map(
        lambda z: np.float32(rng.normal(size=(3, *z.shape))), model.init_carry(B)[0]
    )
    weights = jax.random.normal(jax.random.key(2), (T, B, 16))

    def loss(w, carry0, xs, backward):
        return (wavefront(_GATES[cell], w, carry0, xs, keep, backward) * weights).sum()

    grads = jax.grad(loss, (0, 1, 2))
    fused, auto = grads(w, carry0, xs, "wavefront_fused"), grads(w, carry0, xs, "wavefront")
    for x, y in zip(jax.tree.leaves(fused), jax.tree.leaves(auto), strict=True):
        assert np.abs(y).max() > 0
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6 * np.abs(y).max())


def test_autodiff_keeps_the_model_cache_keys_of_before_the_knob():
    """Models cached before `train.backward` existed were trained with autodiff: that value
    keeps their keys (they still load); any other, the default included, is another entry."""
    from conftest import TINY, compose

    from seqgen.checkpoint import ModelCache
    from seqgen.config import to_dict
    from seqgen.data.corpus import fingerprint, load_corpus
    from seqgen.model_store import ModelSpec, model_cache_key
    from seqgen.models import model_identity

    cfg = compose([*TINY, "train.backward=autodiff"])
    corpus = load_corpus(cfg.data, int(cfg.seed))
    before = {k: v for k, v in to_dict(cfg.train).items() if k not in ("progress", "log_every")}
    del before["backward"]  # a train config as it was hashed before `train.backward` existed
    old_key = ModelCache.key(fingerprint(corpus), model_identity(cfg.model), before, int(cfg.seed))
    assert model_cache_key(ModelSpec.of(cfg), corpus) == old_key
    for other in ("fused", "wavefront"):  # other weights, other entry
        other_cfg = compose([*TINY, f"train.backward={other}"])
        assert model_cache_key(ModelSpec.of(other_cfg), corpus) != old_key


@pytest.mark.slow  # several compiles: the full suite runs it
def test_wavefront_without_a_dropout_key_keeps_the_dropout_modules_stream():
    """Train mode without a key: the wavefront cannot take the dropout modules' own draws up
    front, so it runs per layer and drops exactly what autodiff's per-layer path drops."""
    model = LanguageModel(
        V, embed_size=8, hidden_size=16, num_layers=2, dropout=0.5, rngs=nnx.Rngs(0)
    )
    model.train()
    inputs = _batch()[0]
    wave, auto = nnx.clone(model)(inputs, backward="wavefront"), nnx.clone(model)(inputs)
    np.testing.assert_array_equal(wave, auto)
    assert not np.array_equal(auto, nnx.clone(model)(inputs, rngs=jax.random.key(1)))
