"""The models table: a model defined here, outside the package, registered with one call,
trains, caches and decodes through the pipeline; the recurrent cells keep their cache identity;
preflight's estimates read the table."""

from __future__ import annotations

import json
from pathlib import Path

import jax
import jax.numpy as jnp
import pytest
from conftest import TINY, compose
from flax import nnx

from seqgen.errors import UserError
from seqgen.models import (
    ModelSpec,
    build_model,
    count_params,
    estimate_params,
    model_identity,
    register_model,
    training_bytes,
    unregister_model,
)
from seqgen.models.protocol import mask_logits, never_predicted


class Bigram(nnx.Module):
    """A user's model: the next token's logits from the previous token alone (no state)."""

    def __init__(self, vocab_size: int, *, embed_size: int, predict_eos: bool, rngs: nnx.Rngs):
        self.embed = nnx.Embed(vocab_size, embed_size, rngs=rngs)
        self.out = nnx.Linear(embed_size, vocab_size, rngs=rngs)
        self.never = never_predicted(predict_eos)

    def __call__(self, tokens: jax.Array, *, rngs=None, backward="autodiff") -> jax.Array:
        return mask_logits(self.out(self.embed(tokens)), self.never)

    def init_carry(self, batch_size: int, max_len: int | None = None) -> jax.Array:
        return jnp.zeros((batch_size, 1), jnp.float32)  # a carry needs a leaf with axis B

    def step(self, carry: jax.Array, tokens: jax.Array) -> tuple[jax.Array, jax.Array]:
        return carry, self(tokens)


BIGRAM = ModelSpec(
    name="bigram",
    build=lambda fields, vocab_size, **kw: Bigram(vocab_size, **fields, **kw),
    fields=("embed_size",),
    activation_floats=lambda fields, vocab_size, seq_len: fields["embed_size"] + 3 * vocab_size,
)


@pytest.fixture
def bigram():
    register_model(BIGRAM)
    yield BIGRAM
    unregister_model("bigram")


@pytest.mark.slow  # trains or runs the pipeline: the full suite runs it
def test_a_registered_model_trains_caches_and_decodes(bigram, cache_dir, tmp_path):
    from seqgen.experiment import run_experiment

    cfg = compose([*TINY, "model.cell=bigram", "decode.prompts=heldout", "decode.prompt_len=2"])
    first = run_experiment(cfg, tmp_path / "a")
    info = json.loads((tmp_path / "a" / "metrics.json").read_text())["model"]
    meta = json.loads((Path(info["cache_dir"]) / "meta.json").read_text())
    assert meta["model"] == {"cell": "bigram", "embed_size": 8}  # only what it reads
    assert not info["cached"] and meta["params"] == 10 * 8 + 8 * 10 + 10
    assert len(first["results"]) == len(cfg.compare) + 1  # every decoder, then the human row
    samples = (tmp_path / "a" / "samples.jsonl").read_text().splitlines()
    assert len(samples) > 0
    # a field the bigram does not read does not retrain it: same entry, loaded
    again = compose([*TINY, "model.cell=bigram", "decode.prompts=heldout",
                     "decode.prompt_len=2", "model.hidden_size=32"])  # fmt: skip
    run_experiment(again, tmp_path / "b")
    info_b = json.loads((tmp_path / "b" / "metrics.json").read_text())["model"]
    assert info_b["cached"] and info_b["cache_dir"] == info["cache_dir"]
    assert (tmp_path / "b" / "samples.jsonl").read_text().splitlines() == samples


def test_registration_feeds_choices_estimates_and_errors(bigram):
    from seqgen.config import validate_config

    validate_config(compose([*TINY, "model.cell=bigram"]))
    cfg = compose([*TINY, "model.cell=bigram"]).model
    assert estimate_params(cfg, 10) == count_params(build_model(cfg, 10, 0))
    per_token = 8 + 3 * 10
    assert training_bytes(cfg, 16, 4, 10) == 4 * (4 * (10 * 8 + 8 * 10 + 10) + 4 * 16 * per_token)
    with pytest.raises(UserError, match="taken"):
        register_model(BIGRAM)
    unregister_model("bigram")
    with pytest.raises(UserError, match=r"model.cell='bigram' is unknown; allowed: rnn"):
        validate_config(compose([*TINY, "model.cell=bigram"]))
    with pytest.raises(UserError, match=r"model.cell='bigram' is not a model; allowed: rnn"):
        training_bytes(cfg, 16, 4, 10)


@pytest.mark.parametrize("cell", ["rnn", "lstm", "gru"])
def test_recurrent_cells_keep_their_cache_identity(cell):
    """The identity (hashed into the cache key, written to meta.json) of a recurrent cell is
    its model config as before the table: the fields the model group had then, in that order,
    no more (so the Transformer's fields never enter an RNN's key)."""
    cfg = compose([f"model={cell}", "model.num_heads=3", "model.positions=rope"])
    before = ("cell", "embed_size", "hidden_size", "num_layers", "dropout", "tie_weights")
    written = {k: cfg.model[k] for k in (*before, "one_hot_input")}
    assert model_identity(cfg.model) == written
    assert list(model_identity(cfg.model)) == list(written)
