"""Language models (Flax NNX) behind one protocol and one table.

`protocol` says what a model provides (`__call__` for training, `init_carry` and `step` for
decoding); `registry.MODELS` lists them by `model.cell`: the recurrent cells (`lm`) and the
causal Transformer (`transformer`). `register_model` adds one from a user's own code.
"""

from seqgen.models.lm import CELLS, LanguageModel
from seqgen.models.protocol import (
    ModelSpec,
    SequenceModel,
    count_params,
    make_init_carry_fn,
    make_step_fn,
    provides_hidden,
)
from seqgen.models.registry import (
    CELL_CHOICES,
    MODELS,
    build_model,
    check_model,
    estimate_params,
    has_hidden,
    model_identity,
    model_spec,
    register_model,
    training_bytes,
    unregister_model,
)
from seqgen.models.transformer import Transformer

__all__ = [
    "CELLS",
    "CELL_CHOICES",
    "MODELS",
    "LanguageModel",
    "ModelSpec",
    "SequenceModel",
    "Transformer",
    "build_model",
    "check_model",
    "count_params",
    "estimate_params",
    "has_hidden",
    "make_init_carry_fn",
    "make_step_fn",
    "model_identity",
    "model_spec",
    "provides_hidden",
    "register_model",
    "training_bytes",
    "unregister_model",
]
